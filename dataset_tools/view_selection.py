"""Choosing views from scored candidates (pure NumPy): greedy maximum coverage with a swap pass."""

from __future__ import annotations

import math

import numpy as np

from .config import PlacementSettings
from .view_scoring import ViewScores

def greedy_select(scores: ViewScores, positions: np.ndarray, object_centres: np.ndarray, n: int,
                  valid: np.ndarray, settings: PlacementSettings) -> list[int]:
    """Pick ``n`` candidate indices (valid ones first): greedy maximum coverage, then one swap pass.

    Each pick maximises ``share_weight * content share`` plus, for every object the candidate sees (at
    least ``seen_share`` of its rays), a credit of 1 while the object is in fewer than ``views_per_object``
    chosen views (0.1 after that), a quarter of it when an earlier view saw the object from within
    ``new_direction_deg``, times up to 3 for objects few candidates see. The swap pass then replaces a
    chosen view by a candidate whenever that raises the number of (object, view) sightings counted up to
    ``views_per_object`` per object.
    """
    c, o = scores.objects.shape
    seen = scores.objects >= settings.seen_share
    valid = np.asarray(valid, dtype=bool)
    dirs = positions[:, None, :] - object_centres[None, :, :]
    dirs /= np.maximum(np.linalg.norm(dirs, axis=-1, keepdims=True), 1e-12)
    maxdot = np.full((c, o), -2.0)
    count = np.zeros(o)
    cos_new = math.cos(math.radians(settings.new_direction_deg))
    chosen: list[int] = []
    available = valid.copy()
    k_need = settings.views_per_object
    # objects few candidates see are hard to cover: up to 3x credit, so they are not left to the last views
    n_seen = (seen & valid[:, None]).sum(axis=0).astype(np.float64)
    typical = float(np.median(n_seen[n_seen > 0])) if (n_seen > 0).any() else 1.0
    rarity = np.clip(typical / np.maximum(n_seen, 1.0), 1.0, 3.0)
    for _ in range(min(n, c)):
        if not available.any():
            break
        need = np.where(count < k_need, 1.0, 0.1)
        novelty = np.where(maxdot < cos_new, 1.0, 0.25)
        gain = settings.share_weight * scores.share + (seen * novelty * (need * rarity)[None, :]).sum(axis=1)
        gain = np.where(available, gain, -np.inf)
        pick = int(np.argmax(gain))
        chosen.append(pick)
        available[pick] = False
        vis = seen[pick]
        count[vis] += 1
        dots = np.einsum("cok,ok->co", dirs[:, vis], dirs[pick, vis])
        maxdot[:, vis] = np.maximum(maxdot[:, vis], dots)
    chosen = _swap_pass(seen, scores.share, valid, chosen, settings)
    if len(chosen) < n:  # not enough valid candidates: the best of the rest, by content share
        taken = set(chosen)
        rest = [int(i) for i in np.argsort(-scores.share, kind="stable") if int(i) not in taken]
        chosen += rest[: n - len(chosen)]
    return chosen


def _swap_pass(seen: np.ndarray, share: np.ndarray, valid: np.ndarray, chosen: list[int],
               settings: PlacementSettings) -> list[int]:
    """Replace chosen views by valid candidates while that raises the capped sighting count (ties: share)."""
    if not chosen:
        return chosen
    k = settings.views_per_object
    chosen = list(chosen)
    s = seen.astype(np.float64)
    eps = 1e-3 * settings.share_weight
    for _ in range(2):
        improved = False
        for slot in range(len(chosen)):
            rest = [j for t, j in enumerate(chosen) if t != slot]
            base = s[rest].sum(axis=0) if rest else np.zeros(s.shape[1])
            value = np.minimum(base[None, :] + s, k).sum(axis=1) + eps * share
            value = np.where(valid, value, -np.inf)
            value[rest] = -np.inf
            best = int(np.argmax(value))
            if value[best] > value[chosen[slot]] + 1e-9:
                chosen[slot] = best
                improved = True
        if not improved:
            break
    return chosen
