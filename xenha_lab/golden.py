"""Golden files: what real `xl` prints, recorded on a real-Xen lab dom0.

One scenario, run the same way on real Xen (`record`, through SSH to a QEMU
dom0) and on the simulator (`run_sim`, by the conformance test): list, info,
create, the create errors a failover meets (duplicate name, missing disk, no
memory, no config file), pause/unpause, shutdown, create again, destroy, and
the errors for domains that do not exist.  Each step keeps argv, exit
status, stdout and stderr.

    python -m xenha_lab.golden [--out tests/golden]        # make golden
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1] / 'tests' / 'golden'
DISK = '/dev/loop0'
CFG_DIR = '/etc/xen/golden'
GUEST_MB = 128


def configs(cfg_dir: str, disk: str) -> dict[str, str]:
    """name -> config text; the kernel lines only matter on real Xen."""
    boot = ('kernel = "/boot/vmlinuz-guest"\nramdisk = "/boot/initrd-guest.gz"\n'
            'extra = "console=hvc0"\n')
    return {
        'guest1': f'name = "guest1"\nmemory = {GUEST_MB}\nvcpus = 1\n{boot}'
                  f"disk = [ 'phy:{disk},xvda,w' ]\n",
        'nodisk': f'name = "nodisk"\nmemory = {GUEST_MB}\nvcpus = 1\n{boot}'
                  "disk = [ 'phy:/dev/disk/by-path/missing,xvda,w' ]\n",
        'huge': f'name = "huge"\nmemory = 65536\nvcpus = 1\n{boot}',
    }


def steps(cfg_dir: str) -> list[tuple[str, list[str]]]:
    c = lambda n: f'{cfg_dir}/{n}.cfg'  # noqa: E731
    return [
        ('list_dom0', ['xl', 'list']),
        ('info', ['xl', 'info']),
        ('create', ['xl', 'create', c('guest1')]),
        ('list_running', ['xl', 'list']),
        ('list_one', ['xl', 'list', 'guest1']),
        ('create_duplicate', ['xl', 'create', c('guest1')]),
        ('create_missing_disk', ['xl', 'create', c('nodisk')]),
        ('create_no_memory', ['xl', 'create', c('huge')]),
        ('create_no_config', ['xl', 'create', c('absent')]),
        ('pause', ['xl', 'pause', 'guest1']),
        ('list_paused', ['xl', 'list', 'guest1']),
        ('unpause', ['xl', 'unpause', 'guest1']),
        ('shutdown_wait', ['xl', 'shutdown', '-w', 'guest1']),
        ('list_after_shutdown', ['xl', 'list']),
        ('create_again', ['xl', 'create', c('guest1')]),
        ('destroy', ['xl', 'destroy', 'guest1']),
        ('list_after_destroy', ['xl', 'list']),
        ('destroy_missing', ['xl', 'destroy', 'guest1']),
        ('list_missing', ['xl', 'list', 'guest1']),
        ('shutdown_missing', ['xl', 'shutdown', 'guest1']),
        ('destroy_dom0', ['xl', 'destroy', 'Domain-0']),
    ]


def run_steps(run, cfg_dir: str, settle=lambda name: None) -> list[dict]:
    out = []
    for name, argv in steps(cfg_dir):
        t = time.monotonic()
        r = run(argv)
        out.append({'step': name, 'argv': argv, 'exit': r.exit, 'stdout': r.out,
                    'stderr': r.err, 'seconds': round(time.monotonic() - t, 2)})
        settle(name)
        if name == 'list_after_shutdown':
            # real xl: after `shutdown -w` the domain lingers (--ps--) until
            # xl's monitor process destroys it; a create of the same name
            # fails until then.  Wait for it, as a restart must.
            deadline = time.monotonic() + 30
            while run(['xl', 'list', 'guest1']).exit == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
    return out


def run_sim(total_mb: int, dom0_mb: int, cpus: int) -> list[dict]:
    """The scenario on the simulator (a fresh host state, local runner)."""
    import os
    from xenha_lab import xensim
    from xenha.runner import Result
    with tempfile.TemporaryDirectory() as tmp:
        state, cfg_dir = Path(tmp) / 'state', Path(tmp) / 'cfg'
        cfg_dir.mkdir()
        xensim.init_host(state, 'dom0-1', total_mb=total_mb, dom0_mb=dom0_mb, cpus=cpus)
        xensim.attach_device(state, DISK)
        for n, text in configs(str(cfg_dir), DISK).items():
            (cfg_dir / f'{n}.cfg').write_text(text)
        os.environ['XENSIM_STATE'] = str(state)

        def run(argv):
            import contextlib
            import io
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = xensim.main_xl(argv[1:])
            return Result(code, out.getvalue(), err.getvalue())
        try:
            return [dict(s, stdout=s['stdout'].replace(str(cfg_dir), CFG_DIR),
                         stderr=s['stderr'].replace(str(cfg_dir), CFG_DIR))
                    for s in run_steps(run, str(cfg_dir))]
        finally:
            os.environ.pop('XENSIM_STATE', None)


def record(argv: list[str]) -> int:
    """Boot one real-Xen dom0, run the scenario over SSH, write the golden files."""
    import argparse
    from xenha_lab import dom0, qemu
    from xenha_lab.core import Lab
    from xenha.runner import SSHRunner
    p = argparse.ArgumentParser(prog='python -m xenha_lab.golden')
    p.add_argument('--out', default=str(GOLDEN))
    args = p.parse_args(argv)
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    with Lab() as lab:
        t = time.monotonic()
        qemu.add_host(lab, 'dom0-1')
        print(f'dom0-1 boots to SSH + xl info in {time.monotonic() - t:.0f}s', flush=True)
        host = lab.info['hosts']['dom0-1']
        r = SSHRunner(host['address'], dom0.ssh_options(lab), timeout=120)
        prep = ['sh', '-c', 'modprobe loop; truncate -s 64M /var/tmp/g.img && '
                f'mkfs.ext4 -q /var/tmp/g.img && losetup {DISK} /var/tmp/g.img && '
                f'mkdir -p {CFG_DIR}']
        res = r.run(prep, 60)
        if res.exit:
            raise RuntimeError(f'prepare: {res.err}')
        for n, text in configs(CFG_DIR, DISK).items():
            r.run(['tee', f'{CFG_DIR}/{n}.cfg'], 10, input=text)

        def settle(step):   # let the guest boot before it is paused / listed
            if step in ('create', 'create_again'):
                time.sleep(5)
        result = run_steps(lambda a: r.run(a, 120), CFG_DIR, settle)
        r.close()
    (outdir / 'xl_scenario_4_17_7.json').write_text(json.dumps(result, indent=1) + '\n')
    for s in result:
        if s['step'] in ('list_running', 'info', 'list_paused'):
            (outdir / f'xl_{s["step"]}_4_17_7.txt').write_text(s['stdout'])
    for s in result:
        print(f'{s["step"]:<22} exit {s["exit"]}  {s["seconds"]:6.2f}s  '
              f'{(s["stderr"] or s["stdout"]).strip().splitlines()[-1:] }')
    return 0


# -- comparison helpers (used by the conformance test) ------------------------
def normalize(text: str) -> str:
    """Drop what legitimately differs between runs: source line numbers,
    domain ids, times, memory figures."""
    text = re.sub(r'(\w+\.c):\d+:', r'\1:N:', text)
    text = re.sub(r'Domain \d+:', 'Domain N:', text)
    return text


if __name__ == '__main__':
    import sys
    sys.exit(record(sys.argv[1:]))
