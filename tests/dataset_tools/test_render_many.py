"""`dataset-tools render-many`: inputs, output names, option forwarding, and real (tiny) renders of three
example scenes plus a corrupt .blend, with local worker processes and with a local Ray instance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_tools.errors import DatasetError
from dataset_tools.render_many import expand_inputs, forwarded_options, output_names

ROOT = Path(__file__).resolve().parents[2]
#: Workbench, 32 px, 2 train + 1 val + 1 rotated val = 4 views per file.
TINY = ["--engine", "workbench", "--res", "32", "--train", "2", "--val", "1", "--test", "0", "--rotations", "10"]
VIEWS = 4


def run_cli(*args, timeout=240, **kw):
    return subprocess.run([sys.executable, "-m", "dataset_tools", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kw)


def error_lines(proc) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("dataset-tools: error:")]


# ------------------------------------------------------------------------------------- no rendering


def test_expand_inputs_globs_lists_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for p in ("a/x.blend", "a/y.blend", "b/x.blend", "b/z.blend"):
        (tmp_path / p).write_bytes(b"BLENDER-v500")
    (tmp_path / "a/notes.txt").write_text("not a scene")
    listing = tmp_path / "b/list.txt"
    listing.write_text("# scenes\n\nz.blend\n../a/*.blend\n  x.blend  \nmissing.blend\n")
    got = expand_inputs(["a/*.blend", str(listing), "b", "a/x.blend"], cwd=tmp_path)
    rel = [str(p.relative_to(tmp_path)) for p in got]
    # Order of first appearance, no repeats; a listed .blend that does not exist is kept (its task fails alone).
    assert rel == ["a/x.blend", "a/y.blend", "b/z.blend", "b/x.blend", "b/missing.blend"]
    assert expand_inputs(["a/nothing_here.blend"], cwd=tmp_path)[0].name == "nothing_here.blend"
    with pytest.raises(DatasetError, match="no files match"):
        expand_inputs(["a/*.blend", "c/*.blend"], cwd=tmp_path)
    with pytest.raises(DatasetError, match="no such file"):
        expand_inputs(["scenes.txt"], cwd=tmp_path)
    (tmp_path / "empty.txt").write_text("# nothing yet\n")
    with pytest.raises(DatasetError, match="no .blend files"):
        expand_inputs(["empty.txt"], cwd=tmp_path)


def test_output_names_unique_and_stable():
    a, b, c = Path("/s/one/table.blend"), Path("/s/two/table.blend"), Path("/s/car.blend")
    names = output_names([a, b, c, Path("/s/logs.blend"), Path("/s/Car.BLEND")])
    assert names[0] != names[1] and names[0].startswith("table-") and names[1].startswith("table-")
    assert names[3].startswith("logs-")  # never the logs folder
    assert names[2].startswith("car-") and names[4].startswith("Car-")  # equal on case-insensitive disks
    assert output_names([b, a])[::-1] == names[:2]  # a file's name does not depend on the order
    assert output_names([c]) == ["car"]


def test_render_options_forwarded_exactly():
    """render-many has every option of render (a new render option appears by itself), and what it passes
    to each render parses back to the same values."""
    from dataset_tools.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    render_opts = {s for a in sub["render"]._actions for s in a.option_strings}
    many_opts = {s for a in sub["render-many"]._actions for s in a.option_strings}
    assert render_opts <= many_opts
    args = parser.parse_args(["render-many", "a.blend", "b.blend", "out", "--res", "40", "--rotations", "10,45.5",
                              "--no-hemisphere", "--engine", "workbench", "--fov", "0.123456789012345",
                              "--use-scene-cameras", "--seed", "7", "--workers", "3", "--frame", "Table,Chairs",
                              "--placement", "inside"])
    assert args.inputs == ["a.blend", "b.blend"] and args.out_root == "out" and args.workers == 3
    tokens = forwarded_options(args, args._render_actions)
    assert "--workers" not in tokens and "--quiet" not in tokens
    back = parser.parse_args(["render", "x.blend", "o", *tokens])
    for action in args._render_actions:
        assert getattr(back, action.dest) == getattr(args, action.dest), action.dest
    assert forwarded_options(parser.parse_args(["render-many", "a.blend", "o"]), args._render_actions) == []


def test_bad_options_and_missing_ray_are_one_line(tmp_path):
    (tmp_path / "s.blend").write_bytes(b"BLENDER-v500")
    for extra, needle in ((["--res", "2"], "--res"), (["--workers", "0"], "--workers"),
                          (["--gpus-per-task", "1"], "--gpus-per-task needs --ray")):
        proc = run_cli("render-many", tmp_path / "s.blend", tmp_path / "out", *extra)
        assert proc.returncode == 2 and error_lines(proc) and needle in error_lines(proc)[0], proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    code = ("import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
            "from dataset_tools.cli import main\n"
            f"sys.exit(main(['render-many', {str(tmp_path / 's.blend')!r}, {str(tmp_path / 'o')!r}, '--ray', 'local']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "pip install 'ultrametric-seg[ray]'" in proc.stderr and not (tmp_path / "o").exists()


def test_unreachable_ray_address_is_one_line(tmp_path):
    pytest.importorskip("ray")
    (tmp_path / "s.blend").write_bytes(b"BLENDER-v500")
    proc = run_cli("render-many", tmp_path / "s.blend", tmp_path / "out", "--ray", "127.0.0.1:1", "--quiet",
                   timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "cannot reach Ray at 127.0.0.1:1" in error_lines(proc)[0]


def test_task_on_a_node_without_the_shared_folder_fails_without_rendering(tmp_path):
    """The driver's probe file is missing where the task runs (OUT_ROOT not shared): failed, nothing started."""
    from dataset_tools.render_many import run_one

    r = run_one(str(tmp_path / "s.blend"), "s", str(tmp_path), ["--res", "32"], probe=".render-many-probe-x")
    assert r["status"] == "failed" and "not visible on node" in r["error"] and "shared" in r["error"]
    assert not (tmp_path / "s").exists() and not (tmp_path / "logs").exists()


# ----------------------------------------------------------------------------------------- real renders


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, table_set_blend) -> Path:
    """scenes/: table_set, bookshelf, vehicle (example scenes) and corrupt.blend (random bytes)."""
    import os
    import shutil

    from dataset_tools.examples import write_example

    d = tmp_path_factory.mktemp("many") / "scenes"
    d.mkdir()
    shutil.copy(table_set_blend, d / "table_set.blend")
    write_example("bookshelf", d / "bookshelf.blend")
    write_example("vehicle", d / "vehicle.blend")
    (d / "corrupt.blend").write_bytes(os.urandom(4096))
    return d


def file_state(root: Path) -> dict:
    """Every output file's bytes, and for the view files (not the JSON that a resume rewrites) the mtime."""
    return {str(p.relative_to(root)): (p.read_bytes(), None if p.suffix == ".json" else p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and "logs" not in p.parts and p.name != "summary.json"}


GOOD = ("table_set", "bookshelf", "vehicle")


def check_run(proc, out: Path, skipped=()) -> dict:
    """Exit 2 with one error line naming the corrupt file; the other three complete and valid, those in
    ``skipped`` found finished (nothing rendered), the others rendered now."""
    from dataset_tools.dataset import ViewJob, view_done

    assert proc.returncode == 2, proc.stderr
    errors = error_lines(proc)
    assert len(errors) == 1 and "1 of 4 files failed" in errors[0] and "corrupt.blend" in errors[0], proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    rows = {Path(r["blend"]).stem: r for r in summary["files"]}
    assert set(rows) == {*GOOD, "corrupt"}
    assert rows["corrupt"]["status"] == "failed" and "not a .blend file" in rows["corrupt"]["error"]
    assert not (out / "corrupt" / "meta.json").exists()
    for stem in GOOD:
        r, skip = rows[stem], stem in skipped
        assert r["status"] == ("skipped" if skip else "done"), r
        assert r["views"] == VIEWS and r["rendered"] == (0 if skip else VIEWS) and r["error"] == ""
        assert r["coverage"].startswith("coverage: ") and "of 2 views" in r["coverage"], r
        folder = out / stem
        assert Path(r["out"]) == folder and Path(r["log"]).is_file()
        counts = json.loads((folder / "meta.json").read_text())["counts"]
        assert counts == {"train": 2, "val": 1, "val_rotate": 1}
        for split, n in counts.items():
            for i in range(n):
                assert view_done(folder, ViewJob(split, i, None).files().values()), (stem, split, i)
        assert view_done(folder, ["val_visible/r_0.png", "val_visible/r_0_rotate.png"])
    rows_out = {ln.split()[0]: ln for ln in proc.stdout.splitlines()[1:]}
    assert "failed" in rows_out["corrupt.blend"] and "not a .blend file" in rows_out["corrupt.blend"]
    for stem in GOOD:
        assert ("skipped" if stem in skipped else "done") in rows_out[f"{stem}.blend"], proc.stdout
    return summary


@pytest.fixture(scope="module")
def local_out(scenes, tmp_path_factory):
    """render-many over scenes/*.blend with 2 local worker processes: (OUT_ROOT, the finished process)."""
    out = tmp_path_factory.mktemp("local") / "out"
    return out, run_cli("render-many", scenes / "*.blend", out, "--workers", "2", *TINY)


@pytest.mark.slow
def test_render_many_local_corrupt_file_fails_alone_and_rerun_skips(scenes, local_out):
    out, proc = local_out
    summary = check_run(proc, out)
    assert summary["mode"] == "local" and summary["workers"] == 2
    before = file_state(out)
    again = run_cli("render-many", scenes / "*.blend", out, "--workers", "2", *TINY)
    check_run(again, out, skipped=GOOD)
    assert file_state(out) == before  # no view rewritten


@pytest.mark.slow
def test_render_many_ray_local(scenes, local_out, tmp_path):
    """One run on a local Ray instance (2 CPUs): a folder finished earlier is skipped, two are rendered,
    the corrupt file fails alone. (One Ray start-up, about 10 s on 2 shared cores, per run.)"""
    import os
    import shutil

    pytest.importorskip("ray")
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(local_out[0] / "table_set", out / "table_set")
    before = file_state(out)
    listing = tmp_path / "scenes.txt"  # the list-file form of the input
    listing.write_text("\n".join(str(p) for p in sorted(scenes.glob("*.blend"))) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = run_cli("render-many", listing, out, "--ray", "local", "--workers", "2", *TINY, env=env)
    summary = check_run(proc, out, skipped=("table_set",))
    assert summary["mode"] == "ray" and summary["ray_address"] == "local"
    assert not list(out.glob(".render-many-probe-*"))  # the shared-folder probe is removed
    assert {k: v for k, v in file_state(out).items() if k.startswith("table_set/")} == before
