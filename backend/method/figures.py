"""Figures of the evaluation: NC against granularity for every row of the table (PNG, matplotlib's Agg).

People read curves faster than 50-column tables: each row's NC at every granularity (the mean over the
GT masks of all levels of the dense NC of that granularity alone) shows where a method is good, fine or
coarse, and how the fixed thresholds sit against the tree's own sweep.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_nc_curves(curves: dict[str, np.ndarray], thresholds: np.ndarray, path: Path, title: str = "") -> Path:
    """Write ``path`` (PNG): one line per row, NC (percent) against the granularity index, fine to coarse.

    Rows cut at the fixed thresholds are drawn solid against the top axis (the Euclidean threshold); the
    ``(whole tree)`` rows and the input masks use granularity steps of their own (dashed, dotted).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for name, curve in curves.items():
        y = 100.0 * np.asarray(curve, np.float64)
        if y.size == 0:
            continue
        x = np.arange(1, y.size + 1)
        style = ":" if name.startswith("input") else "--" if "whole tree" in name else "-"
        ax.plot(x, y, style, label=name, linewidth=1.6)
    ax.set_xlabel("granularity step (fine → coarse)")
    ax.set_ylabel("NC at this granularity alone (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    if len(thresholds):
        top = ax.secondary_xaxis("top")
        ticks = np.linspace(1, len(thresholds), min(6, len(thresholds))).round().astype(int)
        top.set_xticks(ticks)
        top.set_xticklabels([f"{thresholds[t - 1]:.2f}" for t in ticks])
        top.set_xlabel("fixed threshold (Euclidean distance of unit features)")
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
