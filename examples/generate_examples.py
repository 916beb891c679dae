"""Write the procedural example scenes (table_set, bookshelf, vehicle, room, surroundings) as .blend files, optionally render them.

    python examples/generate_examples.py OUT_DIR                 # OUT_DIR/<name>.blend for every example
    python examples/generate_examples.py OUT_DIR --render --res 100 --train 20 --val 2
                                                                 # ... and OUT_DIR/<name>/ Blender-HS folders

The scenes are built by :mod:`dataset_tools.examples` (bpy, procedural, no assets). The same is available
one scene at a time as ``dataset-tools example NAME OUT.blend``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--render", action="store_true", help="also render each scene to OUT/<name>/")
    parser.add_argument("--train", type=int, default=20)
    parser.add_argument("--val", type=int, default=2)
    parser.add_argument("--res", type=int, default=100)
    parser.add_argument("--samples", type=int, default=32)
    args = parser.parse_args(argv)

    from dataset_tools.errors import DatasetError
    from dataset_tools.examples import EXAMPLES, render_example, write_example

    try:
        for name in EXAMPLES:
            path = write_example(name, args.out / f"{name}.blend")
            print(f"wrote {path}", file=sys.stderr)
            if args.render:
                folder = render_example(name, args.out / name, n_train=args.train, n_val=args.val, res=args.res,
                                        samples=args.samples)
                print(f"rendered {folder}", file=sys.stderr)
    except DatasetError as exc:
        print(f"generate_examples: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
