"""What the user receives, by export-level rule, on the runs a bench_quality output folder holds.

For every trained run under ``OUT/runs/<data>/<masks>/base/seed*`` (made by ``bench/bench_quality.py``), segment
the field once and score the exported cuts of each rule on the cloud (:mod:`backend.core.export_metrics`): the
tree's own levels (``persistent``, the default) and the released code's fixed cuts (``fixed``). Prints one Markdown
table, mean +- std over seeds: object recall at the exported cuts, NC of points at the best exported cut (object,
collection), the largest segment's share at each cut (first seed) and the worst share among all cuts but the
coarsest.

    python bench/bench_export_levels.py /tmp/bq
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    from backend.method.pipeline import load_trained, score_exported_cuts, segment_field

    out = Path(argv[0]) if argv else Path("/tmp/bench_quality")
    rows: dict[tuple[str, str, str], list] = {}
    for run in sorted(out.glob("runs/*/*/base/seed*")):
        data = out / "data" / run.parts[-4]
        trainer, scene, _, _, cfg = load_trained(run, data)
        seg = segment_field(trainer, scene, cfg)
        for rule in ("persistent", "fixed"):
            c = dataclasses.replace(cfg, segment=dataclasses.replace(cfg.segment, export_levels=rule))
            rep = score_exported_cuts(seg, scene, data, c)
            if rep is not None:
                rows.setdefault((run.parts[-4], run.parts[-3], rule), []).append(rep)
                print(f"  {run}: {rule} recall {rep.recall_any:.2f}", flush=True)
    print("| scene | masks | levels | n | object recall | NC_obj (points) | NC_coll (points) | largest share per cut "
          "(seed 0) | worst share but the coarsest |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (scene, masks, rule), reps in rows.items():
        def stat(xs: list[float]) -> str:
            a = 100.0 * np.asarray(xs, float)
            return f"{a.mean():.1f} ± {a.std():.1f}"

        worst = [max([c.largest_share for c in r.cuts[:-1]], default=0.0) for r in reps]
        shares = "/".join(f"{100 * c.largest_share:.0f}" for c in reps[0].cuts)
        print(f"| {scene} | {masks} | {rule} | {len(reps)} | {stat([r.recall_any for r in reps])} | "
              f"{stat([r.nc_best['object'] for r in reps])} | {stat([r.nc_best['collection'] for r in reps])} | "
              f"{shares} | {stat(worst)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
