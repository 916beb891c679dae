"""One progress bar over a whole segmentation job, and its ETA (standard library only; shared by the Blender
add-on and ``backend submit``).

A job passes through :data:`STAGES` in order: ``render`` (the client renders the views), ``upload`` (sending,
queued, starting), ``masks`` (2D masks per view), ``training``, ``segmentation`` (feature cloud, tree, labels)
and ``import`` (the client builds the point cloud). Each stage gets a share of the bar proportional to its
expected seconds (:func:`expected_seconds`, from measured per-view / per-step times, see :data:`MEASURED`);
within a stage the bar moves with ``step / total``. The bar never moves back: an event of an earlier stage
(a late message) leaves it where it is.

The ETA is measured, not assumed, once it can be: the current stage's remaining steps at the rate seen since its
first reported step, plus the later stages' expected seconds scaled by how much slower (or faster) this machine
ran the stages seen so far than :data:`MEASURED` (training dominates a job, so after the first tenth of training
the ETA follows the real step rate). Before a stage has a rate the server's own ETA is used when it sends one.

Times are ``time.monotonic()`` seconds passed in explicitly (``now``), so the logic is tested without clocks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: The job's stages in order.
STAGES: tuple[str, ...] = ("render", "upload", "masks", "training", "segmentation", "import")
_INDEX = {s: i for i, s in enumerate(STAGES)}

#: Server stage names (lower-case prefixes) of each stage; anything else keeps the current stage.
_ALIASES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("render",), "render"),
    (("sending", "sent", "queued", "starting", "accepted", "upload"), "upload"),
    (("masks", "points"), "masks"),
    (("training", "train"), "training"),
    (("segment", "pointcloud", "point_cloud", "fuse", "fusion", "tree", "export", "label"), "segmentation"),
    (("import", "done", "received"), "import"),
)


def stage_of(name: str) -> str | None:
    """The stage a server / client stage ``name`` belongs to, or None when unknown.

    >>> stage_of("masks"), stage_of("segmentation"), stage_of("queued"), stage_of("evaluation")
    ('masks', 'segmentation', 'upload', None)
    """
    s = name.strip().lower()
    for prefixes, stage in _ALIASES:
        if s.startswith(prefixes):
            return stage
    return None


@dataclass(frozen=True)
class StageTimes:
    """Seconds per unit of work of each stage on one machine (see :data:`MEASURED`)."""

    render_per_view_mpx: float
    """Seconds to render one view, per megapixel (Cycles at 64 samples; Workbench counts a tenth)."""
    masks_per_view_mpx: float
    """Seconds of classical masks per view, per megapixel."""
    step: dict[str, float]
    """Seconds per training step by preset."""
    segmentation_per_point: float
    """Seconds of segmentation (feature cloud, tree, labels) per returned point."""
    segmentation_fixed: float = 2.0
    import_s: float = 0.5
    """Seconds the client takes to build the point cloud and cache the result."""
    upload_s: float = 1.0
    points_per_pixel: float = 0.104
    """Returned points per rendered pixel before ``max_points`` caps them (the bundled table set at 32 views of
    200 px: 132,940 points)."""


#: Stage times measured with ``scripts/measure_stage_times.py`` (the add-on's default job: the bundled table set,
#: 32 views at 200x200, Cycles 64 samples, classical masks, cpu preset, 1,500 steps) on the 2-core development
#: machine, CPU only, under the shared load of the time (load average 17-18 on 2 cores: other engineers' tests,
#: so an idle machine is faster): render 46.4 s (1.45 s a view), masks 2.7 s, training 81.1 s (0.052 s a step),
#: segmentation 24.4 s for 132,940 points, import 0.03 s: 2.6 minutes in all. Only the ratios between the stages
#: shape the bar; the ETA rescales them by the speed the job actually shows (module docstring). ``default`` /
#: ``paper`` on a CPU: 40 steps of ``default`` at 8 views of 100 px took 0.091 s a step against the cpu preset's
#: 0.040 s there (2.3x), so 0.12 s at the default render; ``fast`` (not measured) is put between the two.
CPU_DEFAULT_STEP_S = 0.12
MEASURED = StageTimes(
    render_per_view_mpx=36.0,
    masks_per_view_mpx=2.1,
    step={"cpu": 0.055, "fast": 0.09, "default": CPU_DEFAULT_STEP_S, "paper": CPU_DEFAULT_STEP_S},
    # segmentation against training (a job's seconds) measured at the default job 0.30 (load 17), 0.20 (load 8-10)
    # and 0.175 (load 5), at 8 views of 100 px 0.20-0.28: 2 s + 0.115 ms a point puts it at 0.21 and 0.18 (the ETA
    # scales it by the speed training shows; training runs one thread, segmentation all cores, so the ratio moves
    # with the load)
    segmentation_per_point=1.15e-4,
)
#: On a GPU server: not measured (no GPU was available); a GPU step of these presets is assumed at 30-60 ms
#: (the order docs/backend.md projects), the segmentation ten times faster. The ETA corrects both once a job runs.
MEASURED_GPU = dataclasses.replace(MEASURED, step={"cpu": 0.03, "fast": 0.03, "default": 0.06, "paper": 0.06},
                                   segmentation_per_point=1.15e-5)


@dataclass(frozen=True)
class JobPlan:
    """What a job will do (known before rendering)."""

    views: int
    resolution: int
    iterations: int
    preset: str = "cpu"
    engine: str = "cycles"
    samples: int = 64
    device: str = "cpu"
    max_points: int = 200_000

    def validate(self) -> None:
        for name in ("views", "resolution", "iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"a job plan needs {name} >= 1, got {getattr(self, name)}")


def times_for(device: str) -> StageTimes:
    """The measured stage times for a server device (``cpu``, ``cuda``, ``cuda:0``, ``mps``...)."""
    return MEASURED if device.strip().lower() in ("", "cpu") else MEASURED_GPU


def expected_seconds(plan: JobPlan, times: StageTimes | None = None) -> tuple[float, ...]:
    """Expected seconds of each of :data:`STAGES` for ``plan`` (all > 0)."""
    plan.validate()
    t = times or times_for(plan.device)
    mpx = plan.views * plan.resolution ** 2 / 1e6
    render_scale = max(plan.samples, 1) / 64 if plan.engine == "cycles" else 0.1
    render = t.render_per_view_mpx * mpx * render_scale
    step = t.step.get(plan.preset, max(t.step.values()))
    points = min(t.points_per_pixel * mpx * 1e6, plan.max_points)
    return (max(render, 0.1), t.upload_s, max(t.masks_per_view_mpx * mpx, 0.1), max(step * plan.iterations, 0.1),
            t.segmentation_fixed + t.segmentation_per_point * points, t.import_s)


def weights(seconds: tuple[float, ...]) -> tuple[float, ...]:
    """Shares of the bar (sum 1) from expected seconds per stage."""
    total = sum(seconds)
    return tuple(s / total for s in seconds)


@dataclass(frozen=True)
class Tracker:
    """The bar and the ETA of one job (immutable: :meth:`update` returns a new one)."""

    expected: tuple[float, ...]
    """Expected seconds per stage (:func:`expected_seconds`)."""
    stage: int = 0
    """Index into :data:`STAGES` of the current stage."""
    fraction: float = 0.0
    """Done fraction of the current stage."""
    started: float = 0.0
    """When the current stage began."""
    first: tuple[float, int] | None = None
    """(time, step) of the current stage's first reported step (its rate is measured from there)."""
    actual: tuple[float, ...] = ()
    """Seconds the finished stages took (0 for a stage skipped)."""
    progress: float = 0.0
    """The bar, in [0, 1], never decreasing."""
    eta: float | None = None
    """Seconds left for the whole job, when known."""

    @classmethod
    def start(cls, plan: JobPlan, now: float, times: StageTimes | None = None) -> "Tracker":
        return cls(expected=expected_seconds(plan, times), started=now).update("render", 0, plan.views, now)

    @property
    def stage_name(self) -> str:
        return STAGES[self.stage]

    def update(self, name: str, step: int, total: int, now: float, server_eta: float | None = None) -> "Tracker":
        """The tracker after an event of stage ``name`` at ``step``/``total`` (``total`` 0: unknown)."""
        stage = stage_of(name)
        t = self
        if stage is not None and _INDEX[stage] > t.stage:  # on to a later stage: close the ones passed
            idx = _INDEX[stage]
            passed = (now - t.started,) + (0.0,) * (idx - t.stage - 1)
            t = dataclasses.replace(t, stage=idx, fraction=0.0, started=now, first=None, actual=t.actual + passed)
        same = stage is not None and _INDEX[stage] == t.stage
        if same and total > 0:
            fraction = min(max(step / total, 0.0), 1.0)
            # the rate counts from the first step made: a stage's step 0 ("preparing") is followed by its set-up
            # (building the field and its tables), which is no step and would make the early rate far too slow
            first = t.first if t.first is not None or step < 1 else (now, int(step))
            t = dataclasses.replace(t, fraction=max(t.fraction, fraction), first=first)
        w = weights(self.expected)
        value = sum(w[:t.stage]) + w[t.stage] * t.fraction
        t = dataclasses.replace(t, progress=min(max(self.progress, value), 1.0))
        return dataclasses.replace(t, eta=t._eta(step if same else None, total if same else 0, now, server_eta))

    def finish(self, now: float) -> "Tracker":
        """The job is over (the result is imported)."""
        return dataclasses.replace(self, stage=len(STAGES) - 1, fraction=1.0, progress=1.0, eta=0.0,
                                   actual=self.actual + (now - self.started,) * (len(STAGES) - len(self.actual)))

    def speed(self, rate: float | None = None, total: int = 0) -> float:
        """How much slower (> 1) this job runs than expected, within [0.05, 20]: from the current stage's measured
        ``rate`` (seconds per step of ``total``) when given, else from the finished server stages' times (masks
        onwards: render and upload run on the client and the network), else 1."""
        if rate is not None and total > 0 and self.expected[self.stage] > 0:
            return min(max(rate * total / self.expected[self.stage], 0.05), 20.0)
        use = [(a, e) for i, (a, e) in enumerate(zip(self.actual, self.expected)) if i >= 2 and a > 0]
        if not use:
            return 1.0
        return min(max(sum(a for a, _ in use) / sum(e for _, e in use), 0.05), 20.0)

    def _eta(self, step: int | None, total: int, now: float, server_eta: float | None) -> float:
        rate = None
        if step is not None and total > 0 and self.first is not None and step > self.first[1]:
            rate = (now - self.first[0]) / (step - self.first[1])
        factor = self.speed(rate, total) if self.stage >= 2 else self.speed()
        if rate is not None and step is not None:
            here = rate * max(total - step, 0)
        elif server_eta is not None and server_eta >= 0:
            here = float(server_eta)
        else:
            here = self.expected[self.stage] * factor * (1.0 - self.fraction)
        return max(here + sum(self.expected[self.stage + 1:]) * factor, 0.0)


def format_duration(seconds: float | None) -> str:
    """``1h 02m``, ``3m 05s``, ``42s``; empty when unknown.

    >>> format_duration(125), format_duration(3725), format_duration(None)
    ('2m 05s', '1h 02m', '')
    """
    if seconds is None or seconds < 0:
        return ""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def estimate_line(plan: JobPlan, cpu_cores: int = 0, load: float = 0.0) -> str:
    """What Segment Scene says before rendering: ``about 2m 35s on this server (cpu; preset cpu, 1500 steps,
    32 views at 200 px)``, plus a note when the server's machine is busy (load above its cores)."""
    seconds = sum(expected_seconds(plan))
    text = (f"about {format_duration(seconds)} on this server ({plan.device or 'device unknown'}"
            + (f", {cpu_cores} cores" if cpu_cores else "")
            + f"; preset {plan.preset}, {plan.iterations} steps, {plan.views} views at {plan.resolution} px)")
    if cpu_cores and load > cpu_cores:
        text += f"; the server is busy (load {load:.1f} on {cpu_cores} cores)"
    return text


def line(tracker: Tracker, step: int = 0, total: int = 0) -> str:
    """One progress line: ``training 120/1500 · 43% · ETA 3m 05s``."""
    head = tracker.stage_name + (f" {step}/{total}" if total > 0 else "")
    parts = [head, f"{100 * tracker.progress:.0f}%"]
    eta = format_duration(tracker.eta)
    if eta and tracker.progress < 1.0:
        parts.append(f"ETA {eta}")
    return " · ".join(parts)
