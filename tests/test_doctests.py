"""The examples in the docstrings of the pure layers (backend.core, backend.wire) are run as tests."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import backend.core
import backend.wire

MODULES = sorted(f"{pkg.__name__}.{m.name}" for pkg in (backend.core, backend.wire)
                 for m in pkgutil.iter_modules(pkg.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
