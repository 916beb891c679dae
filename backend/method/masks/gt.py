"""Read the ground-truth hierarchy of a Blender-HS folder as a plain tree (for ``noisy-gt`` masks).

``gt_seg/<split>/<stem>_ids.png``: 16-bit leaf node ids into ``hierarchy.json`` (0 = background);
``hierarchy.json``: ``{"nodes": [{id, name, kind, parent, children}], "root": id, "levels": ...}``
(docs/architecture.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.method.masks.errors import MaskSourceError


@dataclass
class GtTree:
    """The node tree of ``hierarchy.json``: ``parent[id]`` (the root maps to None), ``root``, ``kind[id]``."""

    parent: dict[int, int | None]
    root: int
    kind: dict[int, str]

    def ancestors(self, node: int) -> list[int]:
        """``node`` and its ancestors up to the root, bottom-up."""
        out, seen = [], set()
        cur: int | None = node
        while cur is not None:
            if cur in seen:
                raise MaskSourceError(f"hierarchy.json has a cycle through node {cur}")
            seen.add(cur)
            out.append(cur)
            cur = self.parent.get(cur)
        return out

    def depth(self, node: int) -> int:
        """Edges from the root (root = 0)."""
        return len(self.ancestors(node)) - 1


def read_hierarchy(data_dir: Path) -> GtTree:
    """Parse ``<data_dir>/hierarchy.json`` into a :class:`GtTree`."""
    path = Path(data_dir) / "hierarchy.json"
    try:
        hier = json.loads(path.read_text())
        nodes = hier["nodes"]
        parent = {int(n["id"]): (None if n.get("parent") is None else int(n["parent"])) for n in nodes}
        kind = {int(n["id"]): str(n.get("kind", "")) for n in nodes}
        root = int(hier.get("root", next(i for i, p in parent.items() if p is None)))
    except FileNotFoundError:
        raise MaskSourceError(f"missing {path}: noisy-gt masks need a dataset rendered by dataset_tools") from None
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as e:
        raise MaskSourceError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    parent[root] = None
    for i, p in parent.items():
        if p is not None and p not in parent:
            raise MaskSourceError(f"{path}: node {i} has unknown parent {p}")
    return GtTree(parent=parent, root=root, kind=kind)


def read_leaf_ids(data_dir: Path, split: str, stem: str) -> np.ndarray:
    """uint16 ``[H, W]`` leaf ids of one view (0 = background); :func:`backend.method.data.read_leaf_ids`."""
    from backend.method.data import DataError
    from backend.method.data import read_leaf_ids as read

    try:
        return read(data_dir, split, stem)
    except DataError as e:
        raise MaskSourceError(str(e)) from None
