"""The one bar over a job's stages and its ETA (backend.wire.job_progress, bpy-free) and how the add-on's job
state shows them."""

from __future__ import annotations

import numpy as np
import pytest

from backend.wire import job_progress as jp
from backend.wire import protocol as P
from blender_addon import jobstate as js
from blender_addon.events import Sent

PLAN = jp.JobPlan(views=32, resolution=200, iterations=1500, preset="cpu", engine="cycles", samples=64)


def simulate(plan: jp.JobPlan, slow: float, rng: np.random.Generator, step_every: int = 10,
             late_masks: bool = True):
    """A job on a machine ``slow`` times slower than the measured times (noisy steps): yields (time, tracker,
    true seconds left) after every event."""
    exp = jp.expected_seconds(plan)
    now = 100.0
    tr = jp.Tracker.start(plan, now)
    end_times = []
    events = []  # (duration before the event, stage, step, total)
    for v in range(1, plan.views + 1):
        events.append((exp[0] / plan.views * rng.uniform(0.5, 1.5), "render", v, plan.views))
    events.append((exp[1], "sending", 0, 0))
    events.append((0.2, "starting", 0, 0))
    for v in range(1, plan.views + 1):
        events.append((slow * exp[2] / plan.views * rng.uniform(0.7, 1.3), "masks", v, plan.views))
    events.append((0.1, "training", 0, plan.iterations))  # "preparing": the field's set-up follows (no step)
    per_step = slow * exp[3] / plan.iterations
    for s in range(step_every, plan.iterations + 1, step_every):
        prep = 0.15 * slow * exp[3] if s == step_every else 0.0
        events.append((prep + per_step * step_every * rng.uniform(0.8, 1.2), "training", s, plan.iterations))
        if late_masks and s == 200:
            events.append((0.0, "masks", 32, 32))  # a late message of an earlier stage
    for k in range(4):
        events.append((slow * exp[4] / 4, "segmentation", k, 3))
    events.append((slow * exp[5], "import", 0, 1))
    total = sum(d for d, *_ in events)
    out = []
    elapsed = 0.0
    for d, stage, step, n in events:
        now += d
        elapsed += d
        tr = tr.update(stage, step, n, now)
        out.append((stage, step, n, tr, total - elapsed))
        end_times.append(now)
    return out, tr.finish(now)


@pytest.mark.parametrize("slow", [0.25, 1.0, 5.0])
def test_bar_is_monotone_and_passes_every_stage(slow):
    seen, final = simulate(PLAN, slow, np.random.default_rng(0))
    bars = [tr.progress for *_, tr, _ in seen]
    assert all(b >= a for a, b in zip(bars, bars[1:]))
    assert [s for s in jp.STAGES if s in {tr.stage_name for *_, tr, _ in seen}] == list(jp.STAGES)
    assert final.progress == 1.0 and final.eta == 0.0
    # training fills its own share of the bar (the issue: it sat at 85 % from the masks on)
    w = jp.weights(jp.expected_seconds(PLAN))
    first = next(tr.progress for st, step, n, tr, _ in seen if st == "training")
    last = max(tr.progress for st, step, n, tr, _ in seen if st == "training")
    assert last - first == pytest.approx(w[3], abs=1e-6)
    assert last == pytest.approx(sum(w[:4]), abs=1e-6)


@pytest.mark.parametrize("slow", [0.25, 1.0, 5.0])
def test_eta_is_within_30_percent_after_the_first_tenth_of_training(slow):
    seen, _ = simulate(PLAN, slow, np.random.default_rng(1))
    checked = 0
    for stage, step, n, tr, left in seen:
        if stage == "training" and step >= 0.1 * n and left > 0:
            assert tr.eta == pytest.approx(left, rel=0.30), (step, tr.eta, left)
            checked += 1
    assert checked > 100


def test_a_late_message_of_an_earlier_stage_neither_moves_the_bar_back_nor_the_stage():
    tr = jp.Tracker.start(PLAN, 0.0).update("training", 500, 1500, 10.0)
    back = tr.update("masks", 3, 32, 11.0)
    assert back.stage_name == "training" and back.progress == tr.progress


def test_stage_names_and_bad_plans():
    assert [jp.stage_of(s) for s in ("queued", "starting", "masks", "training", "segmentation", "tree")] == \
        ["upload", "upload", "masks", "training", "segmentation", "segmentation"]
    assert jp.stage_of("evaluation") is None
    with pytest.raises(ValueError, match="iterations"):
        jp.JobPlan(views=4, resolution=40, iterations=0).validate()
    gpu = jp.expected_seconds(jp.JobPlan(views=4, resolution=40, iterations=1500, preset="default", device="cuda"))
    cpu = jp.expected_seconds(jp.JobPlan(views=4, resolution=40, iterations=1500, preset="default", device="cpu"))
    assert gpu[3] < cpu[3]


def test_job_state_names_the_stage_and_keeps_one_bar():
    s = js.start_rendering(js.JobState(), 4, now=0.0, plan=jp.JobPlan(views=4, resolution=40, iterations=100))
    assert js.status_text(s).startswith("Segment: render 0/4")
    s = js.render_progress(s, 4, 4, now=1.0)
    s = js.apply_event(s, Sent("j1", 1000), now=1.1)
    s = js.apply_event(s, P.Accepted(job="j1"), now=1.2)
    s = js.apply_event(s, P.Progress(job="j1", stage="masks", step=2, total=4), now=2.0)
    assert js.status_text(s).startswith("Segment: masks 2/4") and "training" not in js.status_text(s)
    masks_bar = s.progress
    s = js.apply_event(s, P.Progress(job="j1", stage="training", step=0, total=100, eta=50.0), now=2.5)
    s = js.apply_event(s, P.Progress(job="j1", stage="training", step=10, total=100, eta=50.0), now=3.0)
    s = js.apply_event(s, P.Progress(job="j1", stage="training", step=60, total=100, eta=50.0), now=8.0)
    assert s.progress > masks_bar and "ETA" in js.status_text(s)
    assert s.eta == pytest.approx(0.1 * 40 + sum(s.tracker.expected[4:]) * s.tracker.speed(0.1, 100), rel=1e-6)
    s = js.apply_event(s, P.Result(job="j1", arrays={"points": np.zeros((2, 3), np.float32)}), now=9.0)
    assert s.phase == js.Phase.DONE and js.stage_label(s) == "import" and s.progress < 1.0
    assert js.imported(s, now=9.5).progress == 1.0


def test_backend_submit_shows_one_bar_over_the_job():
    from types import SimpleNamespace as E

    from backend.progress_bars import JobBar, job_plan
    from backend.wire.protocol import JobOptions

    t = [0.0]
    plan = job_plan(E(num_views=4, width=40), JobOptions(preset="cpu", iterations=100))
    assert plan.iterations == 100 and plan.views == 4
    bar = JobBar(plan, enabled=False, clock=lambda: t[0])
    seen = []
    for stage, step, total in [("queued", 0, 0), ("starting", 0, 0), ("masks", 2, 4), ("masks", 4, 4),
                               *[("training", s, 100) for s in range(0, 101, 10)], ("masks", 4, 4),
                               ("segmentation", 0, 3), ("segmentation", 3, 3)]:
        t[0] += 1.0
        bar(E(stage=stage, step=step, total=total, eta=None, queue_position=None))
        seen.append((bar.tracker.stage_name, bar.tracker.progress))
    assert [p for _, p in seen] == sorted(p for _, p in seen)
    assert [s for s, _ in seen][-1] == "segmentation" and seen[-3][0] == "training"
    bar.finish()
    assert bar.tracker.progress == 1.0
