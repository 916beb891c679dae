"""Shared fixtures: the torch device (CPU unless ``--device cuda`` or ``UMSEG_TEST_DEVICE=cuda``), CUDA skips."""

from __future__ import annotations

import os

import pytest

# Blender as a module first: bpy 5.3 (Python 3.13) links a newer oneTBB than the one Open3D bundles, and the first
# one loaded into a process wins, so `import open3d` before `import bpy` makes bpy fail ("undefined symbol ...tbb...").
# Tests import both in one process; the project's own processes never do (rendering runs in its own process).
try:
    import bpy  # noqa: F401
except ImportError:  # an environment without Blender: the tests that need it say so themselves
    pass


def pytest_addoption(parser):
    parser.addoption("--device", default=os.environ.get("UMSEG_TEST_DEVICE", "cpu"),
                     help="torch device for tests that take the `device` fixture (default cpu)")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device(request) -> str:
    return request.config.getoption("--device")
