"""Step prefetch (issue #16): the host work of later steps made on worker threads gives the same run as making it
inside each step, for any number of workers and depth; errors reach the caller; resume is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.core.precompute import sample_stencils_from_runs, stencil_runs
from backend.core.sampling import sample_depth_stencils
from backend.method.prefetch import Prefetcher
from backend.method.trainer import Trainer
from tests.backend.method.test_train import tiny_config, two_box_scene


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def box_scene():
    return two_box_scene()


def _params(tr: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in tr.field.parameters()]


@pytest.mark.parametrize("geometry", ["depth", "nerf"])
def test_prefetch_gives_the_sequential_run_bit_for_bit(box_scene, geometry):
    scene, masks = box_scene
    cfg = tiny_config(geometry=geometry, iterations=8, rays_per_step=256, checkpoint_every=0)
    runs = []
    for workers, depth in ((0, 1), (1, 1), (3, 4)):
        tr = Trainer(scene, masks, cfg)
        tr.prefetch_workers, tr.prefetch_depth = workers, depth
        res = tr.fit()
        runs.append((_params(tr), res.losses))
    for params, losses in runs[1:]:
        assert losses == runs[0][1]
        for a, b in zip(params, runs[0][0]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_batches_depend_on_the_step_only(box_scene):
    scene, masks = box_scene
    tr = Trainer(scene, masks, tiny_config(geometry="nerf", rays_per_step=256, depth_continuity_start=0))
    a = tr.prepare_step(5)
    tr.prepare_step(2)
    b = tr.prepare_step(5)
    assert a.view == b.view and np.array_equal(a.rows, b.rows) and np.array_equal(a.pairs.pairs, b.pairs.pairs)
    assert np.array_equal(a.stencils, b.stencils) and all(np.array_equal(x, y) for x, y in zip(a.graph, b.graph))
    assert set(a.timings) == {"sample", "tree_pairs", "stencils", "graph"}


def test_resume_with_prefetch_matches_one_run(box_scene, tmp_path):
    scene, masks = box_scene
    cfg = tiny_config(geometry="depth", iterations=8, rays_per_step=256, checkpoint_every=0)
    full = Trainer(scene, masks, cfg)
    full.fit()
    half = Trainer(scene, masks, cfg, run_dir=tmp_path, should_stop=lambda: half.step >= 4)
    assert half.fit().stopped and half.step == 4
    rest = Trainer.resume(tmp_path, scene, masks)
    rest.fit()
    for a, b in zip(_params(rest), _params(full)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_prefetcher_order_errors_and_out_of_order():
    seen = []

    def produce(step):
        seen.append(step)
        if step == 6:
            raise RuntimeError("boom at 6")
        return step * 10

    with Prefetcher(produce, 0, 8, depth=2, workers=2) as pf:
        assert [pf.get(s) for s in range(3)] == [0, 10, 20]
        assert pf.get(5) == 50  # the counter moved: produced on demand, later steps rescheduled
        with pytest.raises(RuntimeError, match="boom at 6"):
            pf.get(6)
        assert pf.get(7) == 70
    with pytest.raises(ValueError):
        Prefetcher(produce, 0, 1, depth=0)


@pytest.mark.parametrize("seed", range(4))
def test_stencils_from_precomputed_runs_equal_the_direct_draw(seed):
    rng = np.random.default_rng(seed)
    lab = rng.integers(-1, 6, size=(30, 40))
    lab = np.repeat(np.repeat(lab[::3, ::4], 3, 0), 4, 1)[:30, :40]  # blocky labels: many runs
    runs = stencil_runs(lab)
    for per_mask in (0, 1, 3, 16, 1000):
        a = sample_depth_stencils(lab, np.random.default_rng(seed), per_mask=per_mask)
        b = sample_stencils_from_runs(runs, np.random.default_rng(seed), per_mask=per_mask)
        np.testing.assert_array_equal(a, b)
    empty = stencil_runs(np.full((5, 5), -1))
    assert sample_stencils_from_runs(empty, rng).shape == (0, 4)
