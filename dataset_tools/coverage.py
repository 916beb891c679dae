"""What the rendered views show (pure NumPy): per view the share of pixels on content and the content
objects visible, per content object the views it is seen in and its pixels, and a one-line summary.

An object is *seen* in a view when it covers at least :data:`SEEN_SHARE` of the view's pixels; it is
*covered* when it is seen in at least :data:`MIN_VIEWS` train views. Content is every rendered object that
is not a backdrop or enclosing structure (:func:`dataset_tools.framing.structure_mask`), or what
``--frame`` names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: An object is seen in a view when it covers at least this share of the view's pixels.
SEEN_SHARE = 0.005

#: A content object seen in fewer train views than this is reported.
MIN_VIEWS = 3


@dataclass
class Coverage:
    """Coverage of a set of views. ``views``: per view ``{"view", "content_share", "visible": {name: share}}``
    (objects seen in it); ``objects``: per content object ``{"id", "name", "views", "pixels"}``;
    ``content_share``: share of all pixels on content."""

    views: list[dict] = field(default_factory=list)
    objects: list[dict] = field(default_factory=list)
    content_share: float = 0.0
    placement: str = ""

    @property
    def seen_share(self) -> float:
        """Share of content objects seen in at least :data:`MIN_VIEWS` views (1 when there is no content)."""
        return float(np.mean([o["views"] >= MIN_VIEWS for o in self.objects])) if self.objects else 1.0

    def under_covered(self) -> list[dict]:
        """Content objects seen in fewer than :data:`MIN_VIEWS` views, fewest first."""
        return sorted((o for o in self.objects if o["views"] < MIN_VIEWS), key=lambda o: (o["views"], o["name"]))

    def summary_line(self) -> str:
        """``coverage: 24 of 26 content objects seen in >= 3 of 16 views (>= 0.5 % of a view); 47.1 % of pixels
        on content; placement inside``."""
        n_ok = sum(o["views"] >= MIN_VIEWS for o in self.objects)
        where = f"; placement {self.placement}" if self.placement else ""
        return (f"coverage: {n_ok} of {len(self.objects)} content objects seen in >= {MIN_VIEWS} of "
                f"{len(self.views)} views (>= {100 * SEEN_SHARE:g} % of a view); "
                f"{100 * self.content_share:.1f} % of pixels on content{where}")

    def warning_line(self, limit: int = 8) -> str | None:
        """``warning: 2 content objects seen in fewer than 3 views: Cup (1), Ball (0)``, or None."""
        low = self.under_covered()
        if not low:
            return None
        shown = ", ".join(f"{o['name']} ({o['views']})" for o in low[:limit])
        more = f", and {len(low) - limit} more" if len(low) > limit else ""
        return (f"warning: {len(low)} content object{'s' * (len(low) != 1)} seen in fewer than {MIN_VIEWS} "
                f"views: {shown}{more}")

    def to_json(self) -> dict:
        return {"seen_share_threshold": SEEN_SHARE, "min_views": MIN_VIEWS, "content_share": self.content_share,
                "objects_covered": sum(o["views"] >= MIN_VIEWS for o in self.objects),
                "objects": self.objects, "views": self.views}


def view_stats(ids: np.ndarray, content_ids, names: dict[int, str]) -> tuple[float, dict[int, int]]:
    """Share of ``ids`` [H, W] (leaf ids, 0 = background) on content, and pixels per content id present."""
    ids = np.asarray(ids).astype(np.int64, copy=False)
    content = np.asarray(sorted(int(i) for i in content_ids), dtype=np.int64)
    on = np.isin(ids, content)
    counts = np.bincount(ids[on].ravel(), minlength=int(np.max(content, initial=0)) + 1)
    return float(on.mean()) if ids.size else 0.0, {int(i): int(counts[i]) for i in np.flatnonzero(counts)}


def coverage(views, content_ids, names: dict[int, str], placement: str = "") -> Coverage:
    """Coverage of ``views``: an iterable of ``(view name, ids [H, W])``; ``names``: leaf id -> object name."""
    content = sorted(int(i) for i in content_ids)
    table: dict[int, dict] = {i: {"id": i, "name": names.get(i, str(i)), "views": 0, "pixels": 0} for i in content}
    out = Coverage(placement=placement)
    total = on = 0
    for view, ids in views:
        share, pixels = view_stats(ids, content, names)
        size = int(np.asarray(ids).size)
        total += size
        on += sum(pixels.values())
        visible = {}
        for i, px in sorted(pixels.items()):
            table[i]["pixels"] += px
            if px >= SEEN_SHARE * size:
                table[i]["views"] += 1
                visible[table[i]["name"]] = round(px / size, 5)
        out.views.append({"view": view, "content_share": round(share, 5), "visible": visible})
    out.objects = [table[i] for i in content]
    out.content_share = on / total if total else 0.0
    return out


def views_coverage(views) -> Coverage:
    """Coverage of :class:`dataset_tools.render.RenderedViews` (what the add-on renders for Segment Scene);
    ``views_coverage(v).summary_line()`` is the line ``dataset-tools render`` prints."""
    names = {n["id"]: n["name"] for n in views.hierarchy.nodes}
    return coverage(((f"view {i}", ids) for i, ids in enumerate(views.ids)), views.content_ids, names,
                    views.placement)
