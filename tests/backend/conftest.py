"""Session fixture: one tiny Blender-HS folder rendered with the real dataset tools (child process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def render_tiny(out: Path, train: int = 8, val: int = 2, res: int = 48, name: str = "table_set") -> Path:
    blend = out / f"{name}.blend"
    data = out / "data"
    subprocess.run([sys.executable, "-m", "dataset_tools", "example", name, str(blend)], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "dataset_tools", "render", str(blend), str(data), "--train", str(train),
                    "--val", str(val), "--res", str(res), "--samples", "8", "--rotations", "10,45", "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    return data


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """8 train + 2 val views of the table set at 48x48 (treat as read-only; copy to modify)."""
    return render_tiny(tmp_path_factory.mktemp("tiny"))
