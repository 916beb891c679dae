"""Files of a :class:`backend.wire.protocol.JobResult`, one layout for everyone: ``result.npz`` holds every
array plus ``meta`` (the metadata as a JSON string). The server also writes ``result.json`` (the same
metadata) after it, marking a complete result; the user-facing export (:func:`write_outputs`) adds
``points.ply`` (a ``seg_t<threshold>`` label property per threshold, e.g. ``seg_t0_05``),
``points_segments.ply`` (coloured by segment) and a self-describing ``hierarchy.json``. Read by the server, ``backend submit`` and the Blender add-on.
Never pickles: arrays are loaded with ``allow_pickle=False``."""

from __future__ import annotations

import json
from typing import Any
from pathlib import Path

import numpy as np

from backend.wire.files import atomic_path, write_json_atomic
from backend.wire.protocol import JobResult, ResultArrays
from backend.wire.tree_cut import colour_table, srgb8

RESULT_NPZ = "result.npz"
RESULT_JSON = "result.json"
POINTS_PLY = "points.ply"
HIERARCHY_JSON = "hierarchy.json"


META_ARRAY = "meta"


def write_result_npz(path: Path, result: JobResult) -> None:
    """``result.npz``: the arrays plus ``meta`` as a JSON string, written atomically."""
    arrays: dict[str, Any] = {**result.arrays, META_ARRAY: np.asarray(json.dumps(result.meta, allow_nan=False))}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


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


def label_property(threshold: float) -> str:
    """PLY property of the labels cut at ``threshold``: ``seg_t`` + the threshold with ``_`` for ``.``.

    >>> label_property(0.05), label_property(np.float32(0.1)), label_property(1.0), label_property(0.125)
    ('seg_t0_05', 'seg_t0_1', 'seg_t1', 'seg_t0_125')
    """
    return "seg_t" + f"{float(threshold):.6g}".replace(".", "_").replace("-", "m").replace("+", "")


def label_properties(thresholds) -> list[str]:
    """:func:`label_property` of each threshold, made unique (``_2``, ``_3`` ... for thresholds equal to
    6 significant digits)."""
    names: list[str] = []
    for t in thresholds:
        name, k = label_property(t), 2
        while name in names:
            name, k = f"{label_property(t)}_{k}", k + 1
        names.append(name)
    return names


def threshold_of_property(name: str) -> float | None:
    """Inverse of :func:`label_property` (None for other names; the old ``label_<k>`` names carry no threshold).

    >>> threshold_of_property("seg_t0_05"), threshold_of_property("seg_t0_05_2"), threshold_of_property("red")
    (0.05, 0.05, None)
    """
    if not name.startswith("seg_t"):
        return None
    parts = name[5:].split("_")
    try:
        return float(".".join(parts[:2]).replace("m", "-"))
    except ValueError:
        return None


def ply_labels(props: dict[str, np.ndarray]) -> list[tuple[float | None, np.ndarray]]:
    """The label arrays of a PLY's properties (from :func:`read_ply`), in file order, each with its threshold:
    the ``seg_t<threshold>`` names written now and the ``label_<k>`` names of older files (threshold None)."""
    out: list[tuple[float | None, np.ndarray]] = []
    for name, values in props.items():
        t = threshold_of_property(name)
        if t is not None or (name.startswith("label_") and name[6:].isdigit()):
            out.append((t, np.asarray(values)))
    return out


#: The second PLY: points coloured by segment (at the middle threshold), for viewers without the add-on.
SEGMENTS_PLY = "points_segments.ply"

DISTANCE_TEXT = ("the ultrametric (single-linkage) distance of the point graph: an edge's length is 1 - cos "
                 "between the unit feature vectors of its two points (0 = same direction, 2 = opposite), plus a "
                 "fixed cost where the surface folds between them (their normals more than the crease angle, "
                 "30 degrees by default, apart, or more than the concave angle, 10 degrees, apart where the surface "
                 "folds inward, as where one object rests on another; the cost is the median 1 - cos of such "
                 "edges, and an inward fold edge's own 1 - cos is raised to the mean 1 - cos of the inward fold "
                 "edges around it when that is larger); the "
                 "distance of two points is the smallest, over the paths joining them, of the longest edge on "
                 "the path; two points are in one segment at threshold t when their distance is below t")

HIERARCHY_FIELDS = {
    "thresholds": "the cut thresholds, increasing (fine to coarse), on `distance`",
    "levels": "one entry per threshold: the segments of the cut at that threshold",
    "levels[].threshold": "the threshold of this cut (a feature distance, see `distance`; no unit)",
    "levels[].label_property": "the vertex property of points.ply holding each point's segment id at this "
                               "threshold (-1: not in any kept segment)",
    "levels[].labels_row": "the row of result.npz's `labels` array [T, N] holding the same ids",
    "levels[].segments[].id": "segment id at this threshold, ranked by size (0 = largest); the segment's "
                              "points are the vertices whose `label_property` equals this id",
    "levels[].segments[].size": "number of points (vertices of points.ply) in the segment",
    "levels[].segments[].parent": "id of the segment containing this one at the next coarser threshold "
                                  "(levels[i + 1]); null at the coarsest threshold",
    "levels[].segments[].colour": "sRGB colour of the segment in points_segments.ply and the pictures (stable "
                                  "across thresholds: a merged segment takes the colour of one of its children)",
}


def describe_hierarchy(result: JobResult, colour_threshold: float | None = None) -> dict:
    """``hierarchy.json``: ``meta["hierarchy"]`` (``thresholds`` + ``levels`` of segments with parents) with
    what every field means, the distance and units, and each level's label array in points.ply / result.npz
    (see :data:`HIERARCHY_FIELDS`). Without ``meta["hierarchy"]`` the whole meta is written as it is."""
    meta = result.meta
    hier = meta.get("hierarchy")
    if not isinstance(hier, dict) or not isinstance(hier.get("levels"), list):
        return dict(meta)
    a = result.arrays
    labels = a.get(ResultArrays.LABELS)
    names = label_properties(hier.get("thresholds", []))
    levels = []
    for i, level in enumerate(hier["levels"]):
        level = dict(level)
        level["label_property"] = names[i] if i < len(names) else None
        level["labels_row"] = i
        if isinstance(level.get("threshold"), float):
            level["threshold"] = round(level["threshold"], 6)
        if labels is not None and i < len(labels) and isinstance(level.get("segments"), list):
            table = srgb8(colour_table(labels[i]))
            segs = []
            for s in level.get("segments", []):
                s = dict(s)
                sid = s.get("id")
                if isinstance(sid, int) and 0 <= sid < len(table) - 1:
                    s["colour"] = "#%02x%02x%02x" % tuple(int(x) for x in table[sid])
                segs.append(s)
            level["segments"] = segs
        levels.append(level)
    out = {
        "about": "Hierarchical 3D segmentation of a point cloud by an ultrametric feature field: the segments "
                 "at each threshold are nested (each lies inside one segment of every coarser threshold).",
        "fields": HIERARCHY_FIELDS,
        "distance": meta.get("distance_description", DISTANCE_TEXT),
        "units": {"points": "x y z of points.ply / result.npz `points` are in the scene's world units "
                            "(Blender metres)",
                  "size": "points", "threshold": "feature distance (dimensionless)"},
        "files": {"points": POINTS_PLY, "coloured_points": SEGMENTS_PLY, "arrays": RESULT_NPZ,
                  "coloured_threshold": None if colour_threshold is None else round(float(colour_threshold), 6)},
        "num_points": int(len(a[ResultArrays.POINTS])) if ResultArrays.POINTS in a else meta.get("num_points"),
        "max_segments": meta.get("max_segments"),
        "thresholds": [round(float(t), 6) for t in hier.get("thresholds", [])],
        "levels_chosen_by": hier.get("levels_chosen_by"),
        "levels": levels,
    }
    return out


def middle_threshold_index(thresholds) -> int:
    """Index of the cut ``points_segments.ply`` is coloured by: the one the add-on opens on
    (:func:`backend.wire.presets.default_cut_index`), between the finest parts and the whole objects."""
    from backend.wire.presets import default_cut_index

    return default_cut_index(len(thresholds))


def write_outputs(result: JobResult, out: Path) -> list[Path]:
    """Export for users, every file written atomically: ``result.npz`` (all arrays + ``meta`` JSON string),
    ``hierarchy.json`` (:func:`describe_hierarchy`) and, when the result has points, ``points.ply`` (colours
    and one ``seg_t<threshold>`` label property per threshold) and ``points_segments.ply`` (the points coloured
    by segment at the middle threshold, which MeshLab, CloudCompare and Blender's own PLY import show)."""
    out.mkdir(parents=True, exist_ok=True)
    a = result.arrays
    thresholds = [float(t) for t in a.get(ResultArrays.THRESHOLDS, [])]
    labels = a.get(ResultArrays.LABELS)
    mid = middle_threshold_index(thresholds)
    coloured = labels is not None and len(labels) > 0 and ResultArrays.POINTS in a
    write_result_npz(out / RESULT_NPZ, result)
    write_json_atomic(out / HIERARCHY_JSON, describe_hierarchy(result, thresholds[mid] if coloured else None),
                      indent=1)
    files = [out / RESULT_NPZ, out / HIERARCHY_JSON]
    if ResultArrays.POINTS in a:
        rows = [] if labels is None else list(labels)
        names = label_properties(thresholds[:len(rows)] + [float("nan")] * (len(rows) - len(thresholds)))
        comments = ["world units; seg_t<T>: segment id at threshold T of 1 - cos (-1 none); see hierarchy.json"]
        write_ply(out / POINTS_PLY, a[ResultArrays.POINTS], a.get(ResultArrays.COLORS), rows, names=names,
                  comments=comments)
        files.append(out / POINTS_PLY)
        if coloured and labels is not None:
            seg_rgb = srgb8(colour_table(labels[mid]))[labels[mid]]
            write_ply(out / SEGMENTS_PLY, a[ResultArrays.POINTS], seg_rgb, [labels[mid]], names=[names[mid]],
                      comments=[f"red green blue: colour of the point's segment at threshold {thresholds[mid]:g} "
                                f"({names[mid]}); points.ply has every threshold"])
            files.append(out / SEGMENTS_PLY)
    return files


def write_ply(path: Path, points: np.ndarray, colors: np.ndarray | None, labels: list[np.ndarray],
              names: list[str] | None = None, comments: list[str] | None = None) -> None:
    """Binary little-endian PLY, written atomically: ``x y z`` float32, optional ``red green blue`` uint8, one
    int32 property per array of ``labels`` named by ``names`` (default ``label_<k>``), ``comments`` in the header.

    Shapes: ``points`` [N, 3], ``colors`` [N, 3], each of ``labels`` [N].
    """
    n = len(points)
    names = [f"label_{k}" for k in range(len(labels))] if names is None else list(names)
    if len(names) != len(labels):
        raise ValueError(f"{len(labels)} label arrays but {len(names)} names")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    fields += [(name, "<i4") for name in names]
    rows = np.empty(n, dtype=fields)
    for i, c in enumerate("xyz"):
        rows[c] = points[:, i]
    if colors is not None:
        for i, c in enumerate(("red", "green", "blue")):
            rows[c] = colors[:, i]
    for name, lab in zip(names, labels):
        rows[name] = lab
    types = {"<f4": "float", "u1": "uchar", "<i4": "int"}
    head = ["ply", "format binary_little_endian 1.0"]
    head += ["comment " + " ".join(c.split()).encode("ascii", "replace").decode("ascii") for c in comments or []]
    head += [f"element vertex {n}"]
    head += [f"property {types[t]} {name}" for name, t in fields] + ["end_header"]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(("\n".join(head) + "\n").encode("ascii"))
        f.write(rows.tobytes())


def read_ply(path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a PLY written by :func:`write_ply`: (xyz [N,3], every vertex property by name, in file order)."""
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


def read_ply_comments(path) -> list[str]:
    """The ``comment`` lines of a PLY header (without the keyword)."""
    out = []
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("ascii", "replace").strip()
            if line == "end_header":
                break
            if line.startswith("comment "):
                out.append(line[8:])
    return out
