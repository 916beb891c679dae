"""A seeded generator of malformed client messages, each guaranteed invalid (shared by the decode
fuzz test and the server fuzz test). ``malformed(rng)`` returns ``(kind, frames)``."""

from __future__ import annotations

import json
import random

import numpy as np

from backend.wire import protocol as P
from backend.service.scene_transfer import submit_from_scene
from tests.backend.service_jobs import make_scene


def _valid_submit() -> P.Submit:
    scene = make_scene(n_views=3, h=6, w=8, seed=1)
    scene.masks = [np.random.default_rng(v).random((2, 6, 8)) > 0.5 for v in range(3)]
    return submit_from_scene(scene, P.JobOptions(preset="fast"), job="fuzzjob")


def base_messages() -> list[list[bytes]]:
    msgs = [_valid_submit(), P.Ping(token=3), P.Status(), P.Status(job="abc"), P.Cancel(job="abc"),
            P.Fetch(job="abc", wait=False)]
    return [[bytes(memoryview(f)) for f in P.encode(m)] for m in msgs]


_BASES = base_messages()
_SUBMIT = _BASES[0]


def _header(frames: list[bytes]) -> dict:
    return json.loads(frames[0])


def _with_header(frames: list[bytes], header: dict) -> list[bytes]:
    return [json.dumps(header).encode(), *frames[1:]]


def _array_index(frames: list[bytes], name: str) -> int:
    return [a["name"] for a in _header(frames)["arrays"]].index(name)


def _set_values(rng: random.Random, name: str, value: float) -> list[bytes]:
    """The submit with one element of array ``name`` replaced by ``value``."""
    frames = list(_SUBMIT)
    i = _array_index(frames, name)
    spec = _header(frames)["arrays"][i]
    dtype = np.uint8 if spec["dtype"] == "bool" else P.DTYPES[spec["dtype"]]  # raw bytes for bool
    arr = np.frombuffer(frames[1 + i], dtype).copy()
    if name == "intrinsics" and value == 0.0:
        arr.reshape(-1, 3, 3)[rng.randrange(arr.size // 9), 0, 0] = 0
    else:
        arr[rng.randrange(arr.size)] = value
    frames[1 + i] = arr.tobytes()
    return frames


def m_random_frames(rng):
    return [rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randrange(1, 5))]


def m_truncated_json(rng):
    f = list(rng.choice(_BASES))
    f[0] = f[0][: rng.randrange(0, len(f[0]) - 1)]
    return f


def m_non_utf8(rng):
    f = list(rng.choice(_BASES))
    k = rng.randrange(len(f[0]))
    f[0] = f[0][:k] + b"\xff\xfe" + f[0][k:]
    return f


def m_not_object(rng):
    return [json.dumps(rng.choice([[1, 2], 3, "ping", None, True, 1.5])).encode()]


def m_bad_json_constants(rng):
    return [b'{"v": 1, "type": "ping", "token": ' + rng.choice([b"NaN", b"Infinity", b"-Infinity"]) + b', "arrays": []}']


def m_deep_nesting(rng):
    d = rng.randrange(2000, 100_000)
    return [b'{"v":1,"type":"ping","token":' + b"[" * d + b"]" * d + b',"arrays":[]}']


def m_bad_version(rng):
    f = list(rng.choice(_BASES))
    h = _header(f)
    h["v"] = rng.choice([0, 2, "1", 1.0, None, True, -1, [1]])
    return _with_header(f, h)


def m_missing_version_or_type(rng):
    f = list(rng.choice(_BASES))
    h = _header(f)
    del h[rng.choice(["v", "type", "arrays"])]
    return _with_header(f, h)


def m_bad_type(rng):
    f = list(rng.choice(_BASES))
    h = _header(f)
    h["type"] = rng.choice(["", "submitx", 5, None, "result", "accepted", "progress", "pong", "error",
                            "status_reply", "cancel_ack", "SUBMIT"])
    return _with_header(f, h)


def m_missing_field(rng):
    f = list(rng.choice([_SUBMIT, _BASES[4], _BASES[5]]))  # submit / cancel / fetch need "job"
    h = _header(f)
    del h["job"]
    return _with_header(f, h)


def m_wrong_field_type(rng):
    choices = [
        (0, "job", 123), (0, "job", "../etc"), (0, "job", ""), (0, "job", "x" * 65), (0, "names", [1, 2, 3]),
        (0, "names", ["a"]), (0, "scale", -1), (0, "scale", 0), (0, "scale", "1"), (0, "offset", [1, 2]),
        (0, "offset", [1, 2, "x"]), (0, "options", "fast"), (0, "options", None), (1, "token", "a"),
        (1, "token", 1.5), (1, "token", 2**60), (5, "wait", "yes"), (5, "wait", 1), (3, "job", ["abc"]),
        (4, "job", None), (0, "names", "abc"),
    ]
    i, key, value = rng.choice(choices)
    f = list(_BASES[i])
    h = _header(f)
    h[key] = value
    return _with_header(f, h)


def m_bad_options(rng):
    h = _header(_SUBMIT)
    key, value = rng.choice([
        ("iterations", "10"), ("iterations", 0), ("iterations", -5), ("thresholds", [0.2, 0.1]),
        ("thresholds", [0.1, 0.1]), ("thresholds", [-1.0]), ("thresholds", "0.1"), ("mask_source", "magic"),
        ("preset", "turbo"), ("geometry", "voxels"), ("max_points", 0), ("device", "gpu0"),
        ("device", "cuda:0; rm -rf /"), ("seed", -1), ("seed", 2**40), ("unknown_option", 1),
    ])
    h["options"][key] = value
    return _with_header(_SUBMIT, h)


def m_extra_header_field(rng):
    f = list(rng.choice(_BASES))
    h = _header(f)
    h[rng.choice(["extra", "pickle", "__class__", "jobs"])] = 1
    return _with_header(f, h)


def m_wrong_dtype(rng):
    f = list(_SUBMIT)
    h = _header(f)
    spec = rng.choice(h["arrays"])
    spec["dtype"] = rng.choice([d for d in ["object", "complex64", "<f4", "float128", "int8", "str", "O", "V8",
                                            "uint8", "bool", "int32", "float32", "float64", "uint16", 7, None]
                                if d != spec["dtype"] and not (spec["name"] == "intrinsics" and d == "float64")])
    return _with_header(f, h)


def m_truncated_frame(rng):
    f = list(_SUBMIT)
    i = rng.randrange(1, len(f))
    f[i] = f[i][: rng.randrange(0, len(f[i]))]
    return f


def m_extended_frame(rng):
    f = list(_SUBMIT)
    i = rng.randrange(1, len(f))
    f[i] = f[i] + rng.randbytes(rng.randrange(1, 64))
    return f


def m_frame_count(rng):
    f = list(rng.choice(_BASES))
    if rng.random() < 0.5 and len(f) > 1:
        del f[rng.randrange(1, len(f))]
    else:
        f.append(rng.randbytes(rng.randrange(0, 32)))
    return f


def m_huge_shape(rng):
    f = list(_SUBMIT)
    h = _header(f)
    spec = rng.choice(h["arrays"])
    spec["shape"] = rng.choice([[10**6, 10**6, 3], [2**40], [10**5] * 6, [-1, 3], [1.5, 2], [1] * 7, "3",
                                [True, 4, 4], [2**63, 2**63], [10**4, 8192, 8192, 3]])
    return _with_header(f, h)


def m_shape_mismatch(rng):
    """Same bytes, inconsistent shapes (views, rank, channels)."""
    f = list(_SUBMIT)
    h = _header(f)
    arrays = {a["name"]: a for a in h["arrays"]}
    n, hh, w, c = arrays["rgb"]["shape"]
    name, shape = rng.choice([
        ("rgb", [n, hh, w * c, 1]), ("rgb", [n, hh * w * c]), ("rgb", [n * hh, w, c]), ("c2w", [n, 16]),
        ("c2w", [n * 4, 4]), ("intrinsics", [n * 9]), ("depth", [n, w, hh]), ("depth", [n * hh, w]),
        ("masks", [6, w, hh]),
    ])
    arrays[name]["shape"] = shape
    return _with_header(f, h)


def m_non_finite(rng):
    name = rng.choice(["c2w", "intrinsics", "depth"])
    return _set_values(rng, name, rng.choice([np.nan, np.inf, -np.inf]))


def m_bad_values(rng):
    return rng.choice([
        lambda: _set_values(rng, "depth", -1.0),
        lambda: _set_values(rng, "intrinsics", 0.0),
        lambda: _set_values(rng, "masks", 2),  # bool byte that is not 0/1
        lambda: _set_values(rng, "mask_counts", 5),  # counts do not sum to the masks
        lambda: _set_values(rng, "mask_counts", -1),
    ])()


def m_bad_array_spec(rng):
    f = list(_SUBMIT)
    h = _header(f)
    i = rng.randrange(len(h["arrays"]))
    spec = h["arrays"][i]
    choice = rng.randrange(6)
    if choice == 0:
        del spec["shape"]
    elif choice == 1:
        spec["order"] = "F"
    elif choice == 2:
        spec["name"] = rng.choice(["../x", "", "a b", 3, "_meta_json" * 9])
    elif choice == 3:
        spec["name"] = h["arrays"][(i + 1) % len(h["arrays"])]["name"]
    elif choice == 4:
        h["arrays"][i] = rng.choice([None, 1, "rgb", [1, 2]])
    else:
        h["arrays"] = {"rgb": spec}
    return _with_header(f, h)


def m_missing_array(rng):
    f = list(_SUBMIT)
    h = _header(f)
    i = rng.choice([k for k, a in enumerate(h["arrays"]) if a["name"] != "depth"])
    del h["arrays"][i]
    del f[1 + i]
    return _with_header(f, h)


def m_array_on_ping(rng):
    f = list(_BASES[1])
    h = _header(f)
    h["arrays"] = [{"name": "x", "dtype": "uint8", "shape": [4]}]
    return [*_with_header(f, h), b"abcd"]


def m_oversized_header(rng):
    h = _header(_SUBMIT)
    h["names"] = ["x" * 100_000, "y" * 100_000, "z" * 100_000]
    return _with_header(_SUBMIT, h)


def m_too_many_frames(rng):
    return [_BASES[1][0]] + [b""] * rng.randrange(65, 200)


MUTATIONS = [v for k, v in sorted(globals().items()) if k.startswith("m_")]


def malformed(rng: random.Random) -> tuple[str, list[bytes]]:
    """One invalid message: ``(mutation name, frames)``."""
    m = rng.choice(MUTATIONS)
    return m.__name__, m(rng)
