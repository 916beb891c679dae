"""Atomic file writes: a file is either its old content or its complete new content, never half written
(a crash, a full disk or Ctrl-C leaves at most a hidden temporary sibling, removed on error).

Standard library only; every writer of the project (run folders, job states, results, datasets) uses it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: The name of a writer's temporary sibling of ``<name>``: ``.<name>.<pid>.tmp`` (hidden, and never a name a
#: finished file has). :func:`is_temporary` recognises it, so a folder's owner can delete the ones a killed writer
#: left behind.
TEMPORARY_PATTERN = re.compile(r"\..+\.\d+\.tmp")


def temporary_sibling(path: Path) -> Path:
    """The temporary ``path`` is written to before the rename (see :data:`TEMPORARY_PATTERN`).

    >>> temporary_sibling(Path("a/r_0.png")).name.startswith(".r_0.png.") and is_temporary(temporary_sibling(Path("x")))
    True
    """
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def is_temporary(path: Path) -> bool:
    """Whether ``path``'s name is a writer's temporary (``.<name>.<pid>.tmp``)."""
    return TEMPORARY_PATTERN.fullmatch(path.name) is not None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write to; renamed over ``path`` when the block ends without error,
    removed otherwise. For writers that want a file name (``torch.save``, ``np.savez``).

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('done', ['x.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically, flushed to disk before the rename."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = None) -> None:
    """``json.dumps(obj)`` written atomically (NaN and inf refused: the files are read by other programs)."""
    write_atomic(path, json.dumps(obj, indent=indent, allow_nan=False))
