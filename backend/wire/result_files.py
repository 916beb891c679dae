"""Files of a :class:`backend.wire.protocol.JobResult`, one layout for everyone: ``result.npz`` holds every
array plus ``meta`` (the metadata as a JSON string). The server also writes ``result.json`` (the same
metadata) after it, marking a complete result; the user-facing export adds ``points.ply`` (labels per
threshold) and ``hierarchy.json``. Read by the server, ``backend submit`` and the Blender add-on.
Never pickles: arrays are loaded with ``allow_pickle=False``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from backend.wire.files import atomic_path, write_json_atomic
from backend.wire.protocol import JobResult, ResultArrays

RESULT_NPZ = "result.npz"
RESULT_JSON = "result.json"
POINTS_PLY = "points.ply"
HIERARCHY_JSON = "hierarchy.json"


META_ARRAY = "meta"


def write_result_npz(path: Path, result: JobResult) -> None:
    """``result.npz``: the arrays plus ``meta`` as a JSON string, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **result.arrays, **{META_ARRAY: np.asarray(json.dumps(result.meta, allow_nan=False))})


def read_result_npz(path: Path) -> JobResult:
    """Read ``result.npz`` (a file, or the folder holding it); metadata from inside, else from a
    ``result.json`` beside it. Raises ``FileNotFoundError`` / ``ValueError`` for missing or bad files."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / RESULT_NPZ
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    raw = arrays.pop(META_ARRAY, None)
    if raw is not None:
        meta = json.loads(str(raw))
    elif (path.parent / RESULT_JSON).is_file():
        meta = json.loads((path.parent / RESULT_JSON).read_text())
    else:
        meta = {}
    return JobResult(arrays=arrays, meta=meta if isinstance(meta, dict) else {})


def save_result(result: JobResult, folder: Path) -> None:
    """The server's copy: ``result.npz`` then ``result.json`` atomically (the JSON marks a complete result)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_result_npz(folder / RESULT_NPZ, result)
    write_json_atomic(folder / RESULT_JSON, result.meta)


def has_result(folder: Path) -> bool:
    """Whether :func:`save_result` completed in ``folder``."""
    return (folder / RESULT_JSON).is_file() and (folder / RESULT_NPZ).is_file()


def load_result(folder: Path) -> JobResult:
    """Read what :func:`save_result` wrote."""
    return read_result_npz(folder / RESULT_NPZ)


def write_outputs(result: JobResult, out: Path) -> list[Path]:
    """Export for users: ``result.npz`` (all arrays + ``meta`` JSON string), ``hierarchy.json``
    (``meta["hierarchy"]`` when present, else the whole meta) and, when the result has points,
    ``points.ply`` with colours and one ``label_<k>`` property per threshold."""
    out.mkdir(parents=True, exist_ok=True)
    write_result_npz(out / RESULT_NPZ, result)
    write_json_atomic(out / HIERARCHY_JSON, result.meta.get("hierarchy", result.meta), indent=1)
    files = [out / RESULT_NPZ, out / HIERARCHY_JSON]
    a = result.arrays
    if ResultArrays.POINTS in a:
        labels = a.get(ResultArrays.LABELS)
        write_ply(out / POINTS_PLY, a[ResultArrays.POINTS], a.get(ResultArrays.COLORS),
                  [] if labels is None else list(labels))
        files.append(out / POINTS_PLY)
    return files


def write_ply(path: Path, points: np.ndarray, colors: np.ndarray | None, labels: list[np.ndarray]) -> None:
    """Binary little-endian PLY: ``x y z`` float32, optional ``red green blue`` uint8, ``label_<k>`` int32.

    Shapes: ``points`` [N, 3], ``colors`` [N, 3], each of ``labels`` [N].
    """
    n = len(points)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    fields += [(f"label_{k}", "<i4") for k in range(len(labels))]
    rows = np.empty(n, dtype=fields)
    for i, c in enumerate("xyz"):
        rows[c] = points[:, i]
    if colors is not None:
        for i, c in enumerate(("red", "green", "blue")):
            rows[c] = colors[:, i]
    for k, lab in enumerate(labels):
        rows[f"label_{k}"] = lab
    types = {"<f4": "float", "u1": "uchar", "<i4": "int"}
    head = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    head += [f"property {types[t]} {name}" for name, t in fields] + ["end_header"]
    with open(path, "wb") as f:
        f.write(("\n".join(head) + "\n").encode("ascii"))
        f.write(rows.tobytes())


def read_ply(path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a PLY written by :func:`write_ply`: (xyz [N,3], every vertex property by name)."""
    with open(path, "rb") as f:
        header = []
        while True:
            line = f.readline().decode("ascii").strip()
            header.append(line)
            if line == "end_header":
                break
        n = next(int(h.split()[-1]) for h in header if h.startswith("element vertex"))
        back = {"float": "<f4", "uchar": "u1", "int": "<i4"}
        fields = [(h.split()[2], back[h.split()[1]]) for h in header if h.startswith("property")]
        arr = np.frombuffer(f.read(), dtype=fields, count=n)
    xyz = np.stack([arr["x"], arr["y"], arr["z"]], 1)
    return xyz, {nm: arr[nm] for nm, _ in fields}
