"""Wire protocol: round trips of every message type, strict validation, no torch import."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from backend.wire import protocol as P
from tests.backend.malformed import MUTATIONS, base_messages, malformed

job_ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")
text = st.text(max_size=40)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
small_int = st.integers(-(2**31), 2**31)


def options():
    return st.builds(
        P.JobOptions,
        preset=st.sampled_from(P.JobOptions.PRESETS),
        iterations=st.none() | st.integers(1, 10_000_000),
        mask_source=st.sampled_from(P.JobOptions.MASK_SOURCES),
        geometry=st.sampled_from(P.JobOptions.GEOMETRIES),
        thresholds=st.lists(st.floats(0, 1e6), max_size=8, unique=True).map(lambda xs: tuple(sorted(xs))),
        max_points=st.integers(1, 50_000_000),
        device=st.none() | st.sampled_from(["cpu", "cuda", "cuda:1", "mps"]),
        seed=st.integers(0, 2**32 - 1),
    )


@st.composite
def submits(draw):
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    c = draw(st.sampled_from([3, 4]))
    rgb = draw(hnp.arrays(np.uint8, (n, h, w, c)))
    c2w = draw(hnp.arrays(np.float32, (n, 4, 4), elements=st.floats(-10, 10, width=32)))
    kshape = draw(st.sampled_from([(3, 3), (n, 3, 3)]))
    K = draw(hnp.arrays(np.float32, kshape, elements=st.floats(0.5, 100, width=32)))
    depth = draw(st.none() | hnp.arrays(np.float32, (n, h, w), elements=st.floats(0, 10, width=32)))
    masks = draw(st.none() | st.lists(st.integers(0, 3).flatmap(lambda m: hnp.arrays(np.bool_, (m, h, w))),
                                      min_size=n, max_size=n))
    names = draw(st.just([]) | st.lists(text, min_size=n, max_size=n))
    return P.Submit(job=draw(job_ids), rgb=rgb, c2w=c2w, intrinsics=K, depth=depth, masks=masks, names=names,
                    scale=draw(st.floats(1e-3, 1e3)), offset=tuple(draw(st.lists(finite, min_size=3, max_size=3))),
                    options=draw(options()))


result_arrays = st.dictionaries(
    st.from_regex(r"\A[a-z][a-z0-9_]{0,10}\Z").filter(lambda s: s not in vars(P.ResultArrays).values()),
    st.sampled_from(sorted(P.DTYPES)).flatmap(
        lambda d: hnp.arrays(P.DTYPES[d], hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))),
    max_size=4,
)
json_values = st.recursive(st.none() | st.booleans() | small_int | finite | text,
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(text, c, max_size=3), max_leaves=10)
job_infos = st.builds(P.JobInfo, job=job_ids, state=text, stage=text, step=small_int, total=small_int,
                      queue_position=st.none() | small_int, created=finite, updated=finite,
                      error_code=st.none() | text, error_message=st.none() | text)

MESSAGES = {
    "submit": submits(),
    "accepted": st.builds(P.Accepted, job=job_ids, queue_position=small_int),
    "progress": st.builds(P.Progress, job=job_ids, stage=text, step=small_int, total=small_int, message=text,
                          eta=st.none() | finite, losses=st.dictionaries(text, finite, max_size=3),
                          queue_position=st.none() | small_int),
    "result": st.builds(P.Result, job=job_ids, arrays=result_arrays, meta=st.dictionaries(text, json_values, max_size=3)),
    "error": st.builds(P.Error, code=st.sampled_from(list(P.ErrorCode)), message=text, job=st.none() | job_ids),
    "cancel": st.builds(P.Cancel, job=job_ids),
    "cancel_ack": st.builds(P.CancelAck, job=job_ids, state=text),
    "status": st.builds(P.Status, job=st.none() | job_ids),
    "status_reply": st.builds(P.StatusReply, device=text, server_version=text, jobs=st.lists(job_infos, max_size=3),
                              queue=st.lists(job_ids, max_size=3), running=st.none() | job_ids),
    "ping": st.builds(P.Ping, token=small_int),
    "pong": st.builds(P.Pong, token=small_int),
    "fetch": st.builds(P.Fetch, job=job_ids, wait=st.booleans()),
}


def test_every_message_type_has_a_strategy():
    assert set(MESSAGES) == set(P.MESSAGE_TYPES)


def assert_same(a, b):
    """Field-wise equality, arrays compared by dtype, shape and bytes."""
    assert type(a) is type(b)

    def same(x, y):
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray) and x.dtype == y.dtype and x.shape == y.shape
            assert x.tobytes() == y.tobytes()
        elif isinstance(x, dict):
            assert isinstance(y, dict) and set(x) == set(y)
            for k in x:
                same(x[k], y[k])
        elif isinstance(x, (list, tuple)):
            assert len(x) == len(y)
            for u, v in zip(x, y):
                same(u, v)
        else:
            assert x == y

    for f in type(a).__dataclass_fields__:
        same(getattr(a, f), getattr(b, f))


@pytest.mark.parametrize("kind", sorted(MESSAGES))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(kind, data):
    msg = data.draw(MESSAGES[kind])
    frames = P.encode(msg)
    assert isinstance(frames[0], bytes)
    # As received from zmq: plain bytes per frame.
    back = P.decode([bytes(memoryview(f)) for f in frames])
    assert_same(msg, back)
    header = json.loads(frames[0])
    assert header["v"] == P.PROTOCOL_VERSION and header["type"] == kind
    assert len(frames) == 1 + len(header["arrays"])


def test_encode_is_zero_copy_for_contiguous_arrays():
    rgb = np.zeros((2, 8, 8, 3), np.uint8)
    msg = P.Submit(job="j", rgb=rgb, c2w=np.tile(np.eye(4, dtype=np.float32), (2, 1, 1)),
                   intrinsics=np.eye(3, dtype=np.float32))
    frames = P.encode(msg)
    assert np.shares_memory(frames[1], rgb)


def test_decoded_arrays_view_the_frames():
    frames = [bytes(memoryview(f)) for f in P.encode(P.Result(job="j", arrays={"x": np.arange(10.0)}))]
    x = P.decode(frames).arrays["x"]
    assert not x.flags.writeable and np.shares_memory(x, np.frombuffer(frames[1], np.uint8))
    assert (x == np.arange(10.0)).all()


def test_big_endian_arrays_go_little_endian():
    a = np.arange(6, dtype=">i4").reshape(2, 3)
    back = P.decode(P.encode(P.Result(job="j", arrays={"a": a})))
    assert back.arrays["a"].dtype == np.dtype("<i4") and (back.arrays["a"] == a).all()


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_generated_malformed_messages_raise_protocol_error(seed):
    kind, frames = malformed(random.Random(seed))
    with pytest.raises(P.ProtocolError) as e:
        P.decode(frames, accept=P.CLIENT_TYPES)
    assert e.value.code in set(P.ErrorCode), kind


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.binary(max_size=64), min_size=1, max_size=5))
def test_random_bytes_raise_protocol_error(frames):
    with pytest.raises(P.ProtocolError):
        P.decode(frames)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_valid_headers_never_crash(data):
    """Any JSON value put at any header key: valid or ProtocolError, nothing else."""
    frames = data.draw(st.sampled_from(base_messages()))
    header = json.loads(frames[0])
    key = data.draw(st.sampled_from(sorted(header)) | text)
    header[key] = data.draw(json_values)
    try:
        P.decode([json.dumps(header).encode(), *frames[1:]], accept=P.CLIENT_TYPES)
    except P.ProtocolError:
        pass


def test_every_mutation_is_exercised():
    seen = set()
    rng = random.Random(1)
    for _ in range(2000):
        seen.add(malformed(rng)[0])
    assert seen == {m.__name__ for m in MUTATIONS}


def _submit(**kw):
    n = kw.pop("n", 2)
    base = dict(job="j", rgb=np.zeros((n, 4, 5, 3), np.uint8), c2w=np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)),
                intrinsics=np.eye(3, dtype=np.float32), depth=np.ones((n, 4, 5), np.float32))
    base.update(kw)
    return P.Submit(**base)


@pytest.mark.parametrize("change, code", [
    (dict(rgb=np.zeros((2, 4, 5, 2), np.uint8)), "bad_array"),
    (dict(rgb=np.zeros((2, 4, 5, 3), np.float32)), "bad_array"),
    (dict(c2w=np.zeros((2, 4, 4), np.float64)), "bad_array"),
    (dict(c2w=np.full((2, 4, 4), np.nan, np.float32)), "bad_array"),
    (dict(intrinsics=np.zeros((3, 3), np.float32)), "bad_array"),
    (dict(intrinsics=np.eye(3, dtype=np.float32)[None].repeat(3, 0)), "bad_array"),
    (dict(depth=np.full((2, 4, 5), np.inf, np.float32)), "bad_array"),
    (dict(depth=-np.ones((2, 4, 5), np.float32)), "bad_array"),
    (dict(depth=np.ones((2, 5, 4), np.float32)), "bad_array"),
    (dict(masks=[np.zeros((1, 4, 5), bool)]), "bad_array"),
    (dict(masks=[np.zeros((1, 4, 5), np.uint8)] * 2), "bad_array"),
    (dict(names=["a"]), "bad_message"),
    (dict(job="no/slashes"), "bad_message"),
    (dict(options=P.JobOptions(iterations=0)), "bad_options"),
    (dict(options=P.JobOptions(thresholds=(0.5, 0.1))), "bad_options"),
    (dict(options=P.JobOptions(mask_source="magic")), "bad_options"),
])
def test_submit_validation(change, code):
    with pytest.raises(P.ProtocolError) as e:
        P.encode(_submit(**change))
    assert e.value.code == code


def test_limits_are_enforced():
    msg = _submit(n=3)
    frames = P.encode(msg)
    with pytest.raises(P.ProtocolError, match="views") as e:
        P.decode(frames, P.Limits(max_views=2))
    assert e.value.code == "too_large" and e.value.job == "j"
    for lim in (P.Limits(max_height=3), P.Limits(max_width=4), P.Limits(max_total_bytes=100),
                P.Limits(max_header_bytes=100), P.Limits(max_arrays=2)):
        with pytest.raises(P.ProtocolError) as e:
            P.decode(frames, lim)
        assert e.value.code == "too_large"


def test_decode_restricts_types_and_reports_job():
    frames = P.encode(P.Accepted(job="abc"))
    with pytest.raises(P.ProtocolError) as e:
        P.decode(frames, accept=P.CLIENT_TYPES)
    assert e.value.code == "bad_type" and e.value.job == "abc"


def test_job_result_validation():
    n = 4
    good = {"points": np.zeros((n, 3), np.float32), "colors": np.zeros((n, 3), np.uint8),
            "parents": np.full(2 * n - 1, 2 * n - 2, np.int32), "altitudes": np.zeros(2 * n - 1, np.float32),
            "labels": np.zeros((2, n), np.int32), "thresholds": np.array([0.1, 0.2], np.float32)}
    P.JobResult(good, {"hierarchy": {"a": 1}}).validate()
    for name, bad in [("points", np.zeros((n, 2), np.float32)), ("colors", np.zeros((n, 3), np.float32)),
                      ("parents", np.full(2 * n - 1, 99, np.int32)), ("labels", np.zeros((3, n), np.int32)),
                      ("altitudes", np.full(2 * n - 1, np.nan, np.float32)), ("_private", np.zeros(1))]:
        with pytest.raises(P.ProtocolError):
            P.JobResult({**good, name: bad}).validate()
    with pytest.raises(P.ProtocolError):
        P.JobResult(good, {"x": float("nan")}).validate()
    with pytest.raises(P.ProtocolError):
        P.JobResult({"x": np.zeros(2, np.complex64)}).validate()


def test_progress_from_event_drops_non_finite_losses():
    p = P.Progress.from_event("j", P.ProgressEvent("training", 1, 2, "m", eta=float("inf"),
                                                   losses={"a": 1.0, "b": float("nan")}))
    assert p.losses == {"a": 1.0} and p.eta is None and "b=nan" in p.message
    P.decode(P.encode(p))


def test_protocol_imports_neither_torch_nor_other_backend_modules():
    code = ("import sys; import backend.wire.protocol; "
            "bad = [m for m in sys.modules if m.startswith(('torch', 'zmq', 'scipy')) "
            "or (m.startswith('backend.') and not m.startswith('backend.wire'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_pickle_in_protocol_source():
    from backend.wire import codec

    for module in (P, codec):
        src = open(module.__file__).read()
        assert "pickle" not in src.replace("nothing is ever pickled", "")
