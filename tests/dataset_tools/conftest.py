"""Session fixtures: the bundled example scene and one tiny rendered dataset shared by many tests."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

#: A tiny render: enough views for every check, small enough for CI on 2 cores.
SMALL = dict(n_train=4, n_val=2, n_test=1, width=64, height=64, samples=4, rotations=(10.0, 45.0, 90.0, 135.0))


@pytest.fixture(scope="session")
def small_config():
    from dataset_tools.config import RenderConfig

    return RenderConfig(**SMALL)


@pytest.fixture(scope="session")
def table_set_blend(tmp_path_factory) -> Path:
    from dataset_tools.examples import write_example

    return write_example("table_set", tmp_path_factory.mktemp("scenes") / "table_set.blend")


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, table_set_blend, small_config) -> Path:
    """The reference (uninterrupted) render. Treat as read-only: copy before modifying."""
    from dataset_tools.dataset import render_dataset

    out = tmp_path_factory.mktemp("ds") / "table_set"
    render_dataset(table_set_blend, out, small_config)
    return out


@pytest.fixture
def dataset_copy(small_dataset, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(small_dataset, dst)
    return dst


def make_config(**changes):
    from dataset_tools.config import RenderConfig

    return replace(RenderConfig(**SMALL), **changes)
