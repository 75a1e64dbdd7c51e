"""The examples in the product's docstrings (`>>>`) run as tests: each module
that has some is one test."""

import doctest
import importlib
import pkgutil

import pytest

import xenha

pytestmark = pytest.mark.unit


def with_examples() -> list[str]:
    finder = doctest.DocTestFinder()
    out = []
    for info in pkgutil.walk_packages(xenha.__path__, 'xenha.'):
        module = importlib.import_module(info.name)
        if any(t.examples for t in finder.find(module)):
            out.append(info.name)
    return out


MODULES = with_examples()


def test_there_are_examples():
    assert len(MODULES) >= 5, MODULES


@pytest.mark.parametrize('name', MODULES)
def test_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f'{result.failed} of {result.attempted} examples failed'
