"""Configuration of a Blender-HS dataset render.

One dataclass, :class:`RenderConfig`; derive variants with :func:`dataclasses.replace`. Every field that
changes the output is recorded in ``meta.json`` (see :meth:`RenderConfig.to_meta`) so that an interrupted
render resumes only with identical settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import DatasetError

#: Rotations (degrees about the world up axis through the scene centre) of the val views, as in Blender-HS.
DEFAULT_ROTATIONS: tuple[float, ...] = (10.0, 45.0, 90.0, 135.0)

#: Camera placements (see :mod:`dataset_tools.placement`).
PLACEMENTS = ("auto", "orbit", "inside")

#: Cycles device choices (see ``RenderConfig.device``).
DEVICES = ("auto", "cpu", "gpu")

#: Engines understood by :mod:`dataset_tools.render` (CLI name -> Blender engine identifier).
ENGINES = {"cycles": "CYCLES", "workbench": "BLENDER_WORKBENCH"}


@dataclass(frozen=True)
class PlacementSettings:
    """Tunables of the scored placement (defaults are used by every command; not part of the CLI)."""

    grid: int = 32
    """Rays per image side when scoring a candidate (grid x grid rays through pixel positions)."""
    candidates_per_view: int = 8
    """Candidate poses scored per requested view (at least :attr:`min_candidates`)."""
    min_candidates: int = 800
    """Fewest candidates scored for the train split (val and test: a quarter of it)."""
    max_candidates: int = 1200
    """Most candidates scored for a split."""
    enclosed_share: float = 0.75
    """``auto`` picks ``inside`` when rays from the content centre hit structure in this share of directions."""
    obstacle_distance: float = 0.08
    """Obstacle distance as a fraction of the main content group's bounding radius (in a room, at most this
    fraction of the room's smallest inner size); also how far cameras stay in front of what blocks them."""
    obstacle_reach: float = 0.2
    """A surface also counts as an obstacle when nearer than this fraction of the distance to the view's target."""
    max_obstacle_share: float = 0.2
    """A candidate is rejected when more than this share of its rays hit a surface nearer than the obstacle distance."""
    min_content_share: float = 0.05
    """A candidate is rejected when less than this share of its rays hit content."""
    seen_share: float = 0.0075
    """An object counts as seen by a candidate when at least this share of its rays hit it."""
    size_share: float = 0.04
    """An object's credit grows with its share of the view up to this share."""
    views_per_object: int = 3
    """Chosen views each content object should appear in before it stops earning full credit."""
    new_direction_deg: float = 30.0
    """A view sees an object from a new direction when it is this far (degrees) from earlier views of it."""
    share_weight: float = 1.0
    """Weight of the content share against one object's credit."""
    heights: tuple[float, ...] = (0.3, 0.5, 0.7)
    """Camera heights inside a room, as fractions of the room's inner height."""


@dataclass(frozen=True)
class RenderConfig:
    """Everything that decides what a dataset render produces."""

    n_train: int = 100
    """Number of training views (``train/r_<i>``)."""
    n_val: int = 10
    """Number of validation views (``val/r_<i>``); each is also rendered turned by every angle in ``rotations``."""
    n_test: int = 0
    """Number of test views (``test/r_<i>``)."""
    width: int = 200
    """Image width in pixels."""
    height: int = 200
    """Image height in pixels."""
    samples: int = 64
    """Cycles samples per pixel (adaptive sampling may stop earlier; ids and depth are exact regardless)."""
    engine: str = "cycles"
    """``cycles`` (default; CPU, exact object-index pass) or ``workbench`` (fast, flat-shaded; for tests)."""
    rotations: tuple[float, ...] = DEFAULT_ROTATIONS
    """Val-view rotations in degrees; 10 is written as ``val_rotate``, others as ``val_rotate_<N>``."""
    seed: int = 0
    """Seed for camera placement and the Cycles sampling pattern (renders are deterministic for a seed)."""
    hemisphere: bool = True
    """Place sampled cameras on the upper hemisphere (world +Z) only; False uses the whole sphere."""
    camera_angle_x: float = 0.6911112070083618
    """Horizontal field of view in radians (the NeRF-synthetic value)."""
    margin: float = 0.1
    """Extra distance, as a fraction, so the bounding sphere of the content fits in view with a border."""
    use_scene_cameras: bool = False
    """Use the scene's own camera objects (sorted by name) as the train views instead of sampled ones."""
    threads: int = 0
    """Render threads; 0 lets Blender use all cores."""
    device: str = "auto"
    """Cycles device: ``auto`` (a GPU when Blender finds one: OptiX, CUDA, HIP, oneAPI or Metal; else the
    CPU), ``cpu`` or ``gpu`` (error when none). The device used is recorded in meta.json."""
    visibility_rel_tol: float = 0.01
    """Relative depth tolerance when deciding whether a point seen in one view is visible in another."""
    frame: tuple[str, ...] = ()
    """What the sampled cameras frame (look at and fit in view): ``()`` = everything that renders except
    large flat backdrops such as a floor (see :mod:`dataset_tools.framing`), ``("*",)`` = everything, or
    names of collections / objects (their rendered objects). Rendering and ground truth cover the whole
    scene either way."""
    placement: str = "auto"
    """Where sampled cameras go (see :mod:`dataset_tools.placement`): ``orbit`` (the hemisphere around the
    framed content), ``inside`` (positions in the free space of an enclosed room looking at content) or
    ``auto`` (``inside`` when structure encloses the content; the hemisphere for one compact group such as
    a tabletop; else views around the content's groups and objects chosen by ray casts, ``orbit-scored``)."""
    extra: dict = field(default_factory=dict)
    """Free-form settings recorded in meta.json (not interpreted)."""

    def validate(self) -> None:
        """Raise :class:`DatasetError` for settings that cannot produce a dataset."""
        if self.engine not in ENGINES:
            raise DatasetError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 0:
                raise DatasetError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.n_train + self.n_val + self.n_test == 0 and not self.use_scene_cameras:
            raise DatasetError("nothing to render: --train, --val and --test are all 0")
        if not (8 <= self.width <= 16384 and 8 <= self.height <= 16384):
            raise DatasetError(f"resolution must be between 8 and 16384 pixels, got {self.width}x{self.height}")
        if self.samples < 1:
            raise DatasetError(f"samples must be >= 1, got {self.samples}")
        if not (0.01 < self.camera_angle_x < 3.1):
            raise DatasetError(f"camera_angle_x must be in (0.01, 3.1) radians, got {self.camera_angle_x}")
        if self.margin < 0:
            raise DatasetError(f"margin must be >= 0, got {self.margin}")
        if self.device not in DEVICES:
            raise DatasetError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if len(set(self.rotations)) != len(self.rotations):
            raise DatasetError(f"rotations must be distinct, got {list(self.rotations)}")
        if isinstance(self.frame, str) or not all(isinstance(n, str) and n.strip() for n in self.frame):
            raise DatasetError(f"frame must be a list of collection or object names, got {self.frame!r}")
        if self.placement not in PLACEMENTS:
            raise DatasetError(f"unknown placement {self.placement!r}; choose one of {', '.join(PLACEMENTS)}")
        if "*" in self.frame and len(self.frame) > 1:
            raise DatasetError("frame: '*' (everything) cannot be combined with names")

    def to_meta(self) -> dict:
        """The settings as plain JSON values (what meta.json records and resume compares)."""
        d = asdict(self)
        d["rotations"] = [float(r) for r in self.rotations]
        d["frame"] = [str(n) for n in self.frame]
        return d


def rotation_suffix(angle: float) -> str:
    """File-name suffix of a val rotation: ``""`` for 10 degrees (Blender-HS ``val_rotate``), else ``"_45"``."""
    a = float(angle)
    if a == 10.0:
        return ""
    return f"_{int(a)}" if a.is_integer() else f"_{a:g}".replace(".", "p").replace("-", "m")
