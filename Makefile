# xenha: `make demo` runs the lab cluster and the whole failover story on it;
# `make test` runs the test suite.  Both install what they need on a fresh
# Debian 12 machine (as root: apt-get for the real daemons the lab runs).

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
PYTEST_ARGS ?=

# Debian packages of the real components the lab and the tests run
# (libxenmisc4.17: libxlutil, xl's own config parser, reads the rendered domU files)
APT_PACKAGES := openssh-server openssh-client tgt libiscsi-bin vblade aoetools \
	nagios4-core icinga2 openipmi ipmitool fence-agents iproute2 python3-venv \
	qemu-system-x86 busybox-static cpio debootstrap e2fsprogs \
	qemu-utils qemu-block-extra sg3-utils libxenmisc4.17

.PHONY: all deps venv test unit demo bench lint clean readme real-xen-image golden test-real-xen

all: test

deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# a non-editable install: the tests run the commands exactly as a site gets them
# (setuptools' build/ would put files that moved or went away back into the wheel)
venv: $(PY)
	rm -rf build
	$(PY) -m pip install -q '.[test,study]'

test: deps venv
	$(PY) -m pytest $(PYTEST_ARGS)

# the fast tier: pure logic and the docstrings' examples, no lab, no root, no
# apt-get; it runs on the working tree (no reinstall), in seconds
unit: $(PY)
	@$(PY) -c 'import pytest, hypothesis, nagiosplugin, paramiko, jinja2' 2>/dev/null || \
		$(PY) -m pip install -q '.[test]'
	PYTHONPATH=$(CURDIR) $(PY) -m pytest -q -m unit -p no:cacheprovider $(PYTEST_ARGS)

# XEN=auto (real Xen under QEMU when this machine can run it, else simulated), sim, qemu
XEN ?= auto
demo: deps venv
	$(VENV)/bin/xenha demo --xen $(XEN)

bench: deps venv
	$(PY) bench/run_all.py

# real Xen 4.17 dom0s under QEMU (issue 6): the image is built once and cached
real-xen-image: deps venv
	$(PY) -m xenha_lab.xenimage

golden: real-xen-image
	$(PY) -m xenha_lab.golden --out tests/golden

test-real-xen: real-xen-image
	XENHA_REAL_XEN=1 $(PY) -m pytest -s tests/test_real_xen.py

readme: venv
	$(PY) -m xenha.docs README.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
