"""Issue #14: every bad input of the ``backend`` command ends with one ``error:`` line and exit status 2 (no
traceback), one test per family: dataset JSON, arrays, run folders, devices, addresses, options. Plus
weights-only checkpoints and a checkpoint on Ctrl-C."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from backend.cli import main

pytestmark = pytest.mark.timeout(300)


def run(argv, capsys) -> tuple[int, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) >= 1 and lines[-1].startswith("error:"), (rc, err)
    return rc, lines[-1]


def write_folder(folder: Path, n=2, h=8, w=8, tf_patch=None, frame_patch=None, depth=None) -> Path:
    from PIL import Image

    (folder / "train").mkdir(parents=True)
    frames = []
    for v in range(n):
        Image.fromarray(np.full((h, w, 4), 200, np.uint8), "RGBA").save(folder / "train" / f"r_{v}.png")
        m = np.eye(4)
        m[2, 3] = 2.0 + v
        frames.append({"file_path": f"./train/r_{v}", "transform_matrix": m.tolist()})
        if depth is not None:
            (folder / "depth" / "train").mkdir(parents=True, exist_ok=True)
            depth(folder / "depth" / "train" / f"r_{v}.npy", h, w)
    if frame_patch:
        frame_patch(frames)
    tf = {"camera_angle_x": 0.7, "frames": frames}
    tf.update(tf_patch or {})
    (folder / "transforms_train.json").write_text(json.dumps(tf))
    return folder


def train_argv(data: Path, tmp_path: Path, *extra):
    return ["train", data, tmp_path / "run", "--preset", "cpu", "--iterations", "1", "--quiet", *extra]


@pytest.mark.parametrize("tf_patch, frame_patch", [
    ({"camera_angle_x": 0}, None), ({"camera_angle_x": "wide"}, None), ({"w": 0, "fl_x": 5}, None),
    ({"frames": {"a": 1}}, None), (None, lambda fr: fr[0].pop("file_path")),
    (None, lambda fr: fr[0].__setitem__("file_path", 3)),
    (None, lambda fr: fr[0].__setitem__("transform_matrix", [[1, 0], [0, 1, 0]])),
    (None, lambda fr: fr[0].__setitem__("transform_matrix", np.zeros((4, 4)).tolist())),
    (None, lambda fr: fr[0].__setitem__("transform_matrix", [[float("nan")] * 4] * 4)),
])
def test_dataset_json(tmp_path, capsys, tf_patch, frame_patch):
    data = write_folder(tmp_path / "d", tf_patch=tf_patch, frame_patch=frame_patch)
    run(train_argv(data, tmp_path), capsys)


@pytest.mark.parametrize("writer", [
    lambda p, h, w: np.save(p, np.ones((h + 1, w), np.float32)),
    lambda p, h, w: np.save(p, np.array([["a"] * w] * h)),
    lambda p, h, w: p.write_bytes(b"\x93NUMPY\x01\x00"),
    lambda p, h, w: p.write_bytes(pickle.dumps({"x": 1})),
    lambda p, h, w: np.save(p, np.array([{"x": 1}], dtype=object), allow_pickle=True),
])
def test_depth_arrays(tmp_path, capsys, writer):
    data = write_folder(tmp_path / "d", depth=writer)
    run(train_argv(data, tmp_path, "--geometry", "depth"), capsys)


def test_run_folders(tmp_path, capsys):
    data = write_folder(tmp_path / "d", depth=lambda p, h, w: np.save(p, np.full((h, w), 2.0, np.float32)))
    (tmp_path / "afile").write_text("x")
    run(["train", data, tmp_path / "afile", "--preset", "cpu", "--iterations", "1", "--quiet"], capsys)
    run(["train", data, tmp_path / "afile" / "run", "--preset", "cpu", "--iterations", "1", "--quiet"], capsys)
    run(["train", data, "/proc/umseg-run", "--preset", "cpu", "--iterations", "1", "--quiet"], capsys)
    run(["segment", tmp_path / "nope"], capsys)


def test_truncated_or_crafted_checkpoint_is_refused_without_running_code(tmp_path, capsys):
    data = write_folder(tmp_path / "d", depth=lambda p, h, w: np.save(p, np.full((h, w), 2.0, np.float32)))
    rundir = tmp_path / "run"
    assert main(["train", str(data), str(rundir), "--preset", "cpu", "--iterations", "2", "--quiet",
                 "--geometry", "depth"]) == 0
    capsys.readouterr()
    ckpt = rundir / "checkpoint.pt"
    raw = ckpt.read_bytes()
    ckpt.write_bytes(raw[: len(raw) // 3])
    _, line = run(["segment", rundir, "--quiet"], capsys)
    assert "checkpoint" in line

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.write_text, (marker, "code ran"))

    import torch

    torch.save({"model": Evil()}, ckpt)
    run(["segment", rundir, "--quiet"], capsys)
    assert not marker.exists()  # weights-only loading: the pickle's code never ran


def test_devices(tmp_path, capsys):
    data = write_folder(tmp_path / "d")
    run(train_argv(data, tmp_path, "--device", "foo"), capsys)
    import torch

    if not torch.cuda.is_available():
        run(train_argv(data, tmp_path, "--device", "cuda"), capsys)
    run(["serve", "--device", "foo", "--workdir", tmp_path / "w"], capsys)


def test_addresses(tmp_path, capsys):
    data = write_folder(tmp_path / "d")
    for server in ("foo", "tcp://127.0.0.1", "tcp://127.0.0.1:0", "tcp://127.0.0.1:99999"):
        run(["submit", data, "--server", server, "--out", tmp_path / "o"], capsys)
    run(["serve", "--bind", "nonsense", "--workdir", tmp_path / "w"], capsys)
    run(["fetch", "abc", "--server", "foo", "--out", tmp_path / "o"], capsys)


@pytest.mark.parametrize("argv", [
    ["train", "D", "R", "--seed", "-1"], ["train", "D", "R", "--max-views", "-1"], ["train", "D", "R", "--iterations", "0"],
    ["eval", "D", "R", "--max-threshold", "nan"], ["eval", "D", "R", "--max-views", "0"],
    ["submit", "D", "--out", "O", "--timeout", "0"], ["submit", "D", "--out", "O", "--timeout", "inf"],
    ["submit", "D", "--out", "O", "--max-points", "0"], ["submit", "D", "--out", "O", "--seed", "-1"],
    ["serve", "--max-message-mb", "0"], ["serve", "--result-ttl", "nan"], ["serve", "--memory-budget-gb", "-1"],
    ["serve", "--client-timeout", "0"], ["demo", "--views", "0"], ["segment", "R", "--thresholds", "nan"],
])
def test_options_at_parse_time(tmp_path, capsys, argv):
    run(argv, capsys)


def test_unwritable_outputs_and_service_folders(tmp_path, capsys):
    data = write_folder(tmp_path / "d")
    (tmp_path / "afile").write_text("x")
    _, line = run(["submit", data, "--out", tmp_path / "afile", "--server", "tcp://127.0.0.1:9"], capsys)
    assert "--out" in line  # found before any upload or job
    run(["submit", data, "--out", "/proc/umseg-out", "--server", "tcp://127.0.0.1:9"], capsys)
    run(["keys", tmp_path / "afile"], capsys)
    run(["keys", "/proc/umseg-keys"], capsys)
    run(["serve", "--workdir", tmp_path / "afile"], capsys)
    run(["serve", "--workdir", "/proc/umseg-jobs"], capsys)
    run(["serve", "--workdir", tmp_path / "w", "--keys", tmp_path / "nokeys"], capsys)


def test_ctrl_c_during_training_keeps_a_checkpoint(tmp_path):
    from backend.method.config import PRESETS
    from backend.method.data import load_scene
    from backend.method.trainer import CHECKPOINT_NAME, Trainer
    import dataclasses

    data = write_folder(tmp_path / "d", n=2, h=16, w=16,
                        depth=lambda p, h, w: np.save(p, np.full((h, w), 2.0, np.float32)))
    scene = load_scene(data)
    masks = [np.ones((1, 16, 16), bool) for _ in range(2)]
    cfg = dataclasses.replace(PRESETS["cpu"], iterations=50, checkpoint_every=500, progress_every=1, device="cpu")

    def progress(p):
        if p.step == 7:
            raise KeyboardInterrupt

    t = Trainer(scene, masks, cfg, run_dir=tmp_path / "run", progress=progress)
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    import torch

    state = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)
    assert state["step"] == 7
