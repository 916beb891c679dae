"""jobstate and messages (bpy-free): transitions, event mapping, request building, result parsing."""

from __future__ import annotations

import numpy as np
import pytest

from blender_addon import jobstate as js
from blender_addon import messages as M
from backend.wire import protocol as P
from blender_addon.events import ClientFailed, Sent


def test_job_runs_through_phases_with_monotone_progress():
    s = js.start_rendering(js.JobState(), total=4, now=0.0)
    s = js.render_progress(s, 4, 4)
    s = js.apply_event(s, Sent("j1", 1000))
    steps = [P.Accepted(job="j1", queue_position=0),
             P.Progress(job="j1", stage="training", step=5, total=10, eta=3.0),
             P.Progress(job="j1", stage="masks", step=1, total=10),  # a later stage report never moves back
             P.Progress(job="j1", stage="segmentation", step=0, total=1),
             P.Result(job="j1", arrays={"points": np.zeros((2, 3), np.float32)})]
    progress = [s.progress]
    for ev in steps:
        s = js.apply_event(s, ev)
        progress.append(s.progress)
    assert s.phase == js.Phase.DONE and s.progress < 1.0 and js.stage_label(s) == "import"
    s = js.imported(s)
    assert s.progress == 1.0
    assert all(b >= a for a, b in zip(progress, progress[1:]))
    assert "done" in js.status_text(s)


def test_stale_and_foreign_events_are_ignored():
    s = js.apply_event(js.start_rendering(js.JobState(), 1), Sent("j1", 10))
    s2 = js.apply_event(s, P.Progress(job="other", stage="training", step=1, total=2))
    assert s2 == s
    done = js.apply_event(s, P.Error(job="j1", code="cancelled", message="x"))
    assert done.phase == js.Phase.CANCELLED
    assert js.apply_event(done, P.Progress(job="j1", stage="training")) == done


def test_failures_and_invalid_transitions():
    s = js.apply_event(js.start_rendering(js.JobState(), 1), Sent("j1", 10))
    f = js.apply_event(s, ClientFailed("j1", "server_unavailable", "no reply"))
    assert f.phase == js.Phase.FAILED and "server_unavailable" in js.status_text(f)
    with pytest.raises(js.InvalidTransition):
        js.transition(js.JobState(), js.Phase.DONE)
    assert js.request_cancel(js.start_rendering(js.JobState(), 2)).phase == js.Phase.CANCELLED
    assert js.request_cancel(s).cancel_requested


def test_format_eta():
    assert [js.format_eta(x) for x in (None, 42, 185, 3725)] == ["", "42s", "3m 05s", "1h 02m"]


def _views(n=2, h=8, w=10):
    rgba = np.zeros((n, h, w, 4), np.uint8)
    c2w = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    K = np.array([[10, 0, 5], [0, 10, 4], [0, 0, 1]], np.float32)
    return rgba, c2w, K, np.ones((n, h, w), np.float32)


def test_build_submit_round_trips_and_validates():
    rgba, c2w, K, depth = _views()
    sub = M.build_submit(rgba, c2w, K, depth, M.SegmentOptions(mask_source="classical", iterations=3))
    back = P.decode(P.encode(sub))
    assert back.job == sub.job and back.options.iterations == 3 and back.depth.shape == (2, 8, 10)
    with pytest.raises(P.ProtocolError, match="depth"):
        M.build_submit(rgba, c2w, K, depth[:, :4])
    with pytest.raises(P.ProtocolError, match="mask_source"):
        M.build_submit(rgba, c2w, K, options=M.SegmentOptions(mask_source="magic"))


def test_parse_result_checks_the_tree_and_file_round_trip(tmp_path):
    from tests.backend.service_jobs import single_linkage

    pts = np.random.default_rng(1).normal(size=(20, 3)).astype(np.float32)
    parents, altitudes = single_linkage(pts)
    arrays = {"points": pts, "parents": parents, "altitudes": altitudes}
    r = M.parse_result(arrays, {"a": 1}, "job1")
    assert r.has_tree and r.n_points == 20 and r.colors.shape == (20, 3)
    bad = dict(arrays, parents=np.zeros_like(parents))
    with pytest.raises(M.ResultError, match="tree"):
        M.parse_result(bad)
    with pytest.raises(M.ResultError, match="neither"):
        M.parse_result({"points": pts})
    np.savez(tmp_path / "result.npz", **arrays, meta=np.array('{"job": "job1"}'))
    back = M.load_result_file(tmp_path)
    assert back.job == "job1" and np.array_equal(back.parents, parents)
    with pytest.raises(M.ResultError, match="no result file"):
        M.load_result_file(tmp_path / "missing")


def test_levels_note_says_how_the_levels_were_chosen():
    pts = np.zeros((4, 3), np.float32)
    labels = np.array([[0, 1, 2, 3], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]], np.int32)
    arrays = {"points": pts, "labels": labels, "thresholds": np.array([0.1, 0.2, 0.3, 0.4, 0.5], np.float32)}
    tree = M.parse_result(arrays, {"hierarchy": {"levels_chosen_by": {"rule": "persistent"}}})
    assert tree.levels_note() == "5 levels read off the tree (from parts to the whole scene); opened at 3 of 5"
    assert tree.default_threshold() == pytest.approx(0.3), "the note names the level the result opens on"
    assert "fixed thresholds" in M.parse_result(arrays, {"hierarchy": {"levels_chosen_by": {"rule": "fixed"}}}).levels_note()
    assert M.parse_result(arrays, {}).levels_note().endswith("levels as sent; opened at 3 of 5")


def test_bpy_free_modules_import_neither_bpy_nor_torch():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, blender_addon, blender_addon.client, blender_addon.jobstate, blender_addon.messages, "
            "backend.wire.tree_cut, backend.wire.protocol, blender_addon.events; "
            "print(sorted(m for m in ('bpy', 'torch', 'zmq') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
