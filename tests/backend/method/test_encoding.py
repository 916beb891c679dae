"""Hash-grid encoders: one checkpoint format for tiny-cuda-nn and the pure-torch grid (issue #16).

The CPU tests check the ``tcnn`` layout of :class:`TorchHashGrid` against a scalar re-statement of tiny-cuda-nn's
``kernel_grid`` (``encodings/grid.h``: ``scale = exp2(l * log2 b) * N_min - 1``, ``pos = x * scale + 0.5``,
``res = ceil(scale) + 1``, dense index ``x + y res + z res^2`` or the coherent-prime hash, modulo the level size)
on synthetic parameters, and the state-dict conversions (the legacy flat ``encoding.params``, the shared ``table``
format, layout switching on load, the error for an ``ngp`` table in tiny-cuda-nn). The last test builds a real
:class:`TcnnHashGrid` when ``tinycudann`` imports on a CUDA machine (skipped otherwise).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.method.field.encoding import (
    EncoderLayoutError, HashGridConfig, TorchHashGrid, convert_tcnn_params, grid_layout, tcnn_available,
    tcnn_grid_layout,
)

CFG = HashGridConfig(num_levels=5, features_per_level=2, log2_hashmap_size=9, base_resolution=3, max_resolution=40,
                     backend="torch")
PRIMES = (1, 2654435761, 805459861)


def tcnn_reference(params: np.ndarray, cfg: HashGridConfig, x: np.ndarray) -> np.ndarray:
    """tiny-cuda-nn's HashGrid forward, one point / level / corner at a time (float64 weights, uint32 indices)."""
    f = cfg.features_per_level
    t = 1 << cfg.log2_hashmap_size
    log2_b = np.float32(math.log2(np.float32(cfg.per_level_scale)))
    sizes = []
    for lvl in range(cfg.num_levels):
        scale = float(np.float32(np.exp2(np.float32(lvl) * log2_b) * np.float32(cfg.base_resolution) - 1))
        res = math.ceil(scale) + 1
        n = min(res ** 3, 2 ** 31 - 1)
        n = (n + 7) // 8 * 8
        sizes.append(min(n, t))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    out = np.zeros((len(x), cfg.num_levels * f))
    for i, p in enumerate(np.clip(x, 0, 1)):
        for lvl in range(cfg.num_levels):
            scale = np.float32(np.exp2(np.float32(lvl) * log2_b) * np.float32(cfg.base_resolution) - 1)
            res = math.ceil(float(scale)) + 1
            size = sizes[lvl]
            pos = p.astype(np.float32) * scale + np.float32(0.5)
            grid = np.floor(pos).astype(np.int64)
            frac = (pos - np.floor(pos)).astype(np.float64)
            for c in range(8):
                bits = [(c >> d) & 1 for d in range(3)]
                w = np.prod([frac[d] if bits[d] else 1 - frac[d] for d in range(3)])
                g = [int(grid[d]) + bits[d] for d in range(3)]
                stride, index = 1, 0
                for d in range(3):
                    if stride > size:
                        break
                    index += g[d] * stride
                    stride *= res
                if size < stride:  # hashed level
                    index = 0
                    for d in range(3):
                        index ^= (g[d] * PRIMES[d]) & 0xFFFFFFFF
                row = offsets[lvl] + index % size
                out[i, lvl * f:(lvl + 1) * f] += w * params[row * f:(row + 1) * f]
    return out


def test_tcnn_layout_sizes_match_tiny_cuda_nn_formula():
    scale, res, size, dense = tcnn_grid_layout(CFG)
    assert scale[0] == CFG.base_resolution - 1 and res[0] == CFG.base_resolution
    assert np.all(size % 8 == 0) and np.all(size <= 1 << CFG.log2_hashmap_size)
    assert dense.tolist() == [bool(r ** 3 <= s) for r, s in zip(res, size)]
    assert dense[0] and not dense[-1], "the test config must have dense and hashed levels"
    grid = TorchHashGrid(CFG, layout="tcnn")
    assert grid.table.shape == (int(size.sum()), CFG.features_per_level)
    # the paper's feature grid (17 levels x 4, 2^20, max 64: all dense) and density grid (hashed fine levels)
    for cfg in (HashGridConfig(max_resolution=64), HashGridConfig(max_resolution=2048)):
        _, res, size, _ = tcnn_grid_layout(cfg)
        assert np.all(size == np.minimum((np.minimum(res.astype(float) ** 3, 2 ** 31) + 7) // 8 * 8, 2 ** 20))


def test_tcnn_layout_forward_matches_the_kernel_on_synthetic_params():
    grid = TorchHashGrid(CFG, layout="tcnn")
    params = torch.randn(grid.table.numel(), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        grid.table.copy_(convert_tcnn_params(params, CFG))
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.random((40, 3)), [[0, 0, 0], [1, 1, 1], [1, 0, 0.5], [0.999, 1e-4, 0.5]]])
    got = grid(torch.as_tensor(x, dtype=torch.float32)).detach().double().numpy()
    want = tcnn_reference(params.double().numpy(), CFG, x.astype(np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_ngp_layout_is_unchanged_and_differs_from_tcnn():
    a = TorchHashGrid(CFG)
    assert a.layout == "ngp" and a.table.shape[0] == int(grid_layout(CFG)[1].sum())
    torch.manual_seed(3)
    b = TorchHashGrid(CFG)
    torch.manual_seed(3)
    old_draw = (torch.rand(int(grid_layout(CFG)[1].sum()), CFG.features_per_level) * 2 - 1) * CFG.init_scale
    torch.testing.assert_close(b.table.detach(), old_draw, rtol=0, atol=0)  # same initial table as before


def test_legacy_tcnn_state_dict_converts_on_load():
    """A checkpoint written by TcnnHashGrid before the shared format (flat ``encoding.params``) loads on CPU."""
    ref = TorchHashGrid(CFG, layout="tcnn")
    flat = torch.randn(ref.table.numel())
    cpu = TorchHashGrid(CFG)  # built as on a CPU machine: ngp layout
    cpu.load_state_dict({"encoding.params": flat})
    assert cpu.layout == "tcnn"
    torch.testing.assert_close(cpu.table.detach().reshape(-1), flat, rtol=0, atol=0)
    with torch.no_grad():
        ref.table.copy_(flat.reshape(ref.table.shape))
    x = torch.rand(64, 3)
    torch.testing.assert_close(cpu(x), ref(x), rtol=0, atol=0)


def test_shared_format_round_trip_switches_layout_both_ways():
    src = TorchHashGrid(CFG, layout="tcnn")
    sd = src.state_dict()
    assert set(sd) == {"table", "_extra_state"} and sd["_extra_state"] == {"layout": "tcnn"}
    dst = TorchHashGrid(CFG)
    dst.load_state_dict(sd)
    x = torch.rand(32, 3)
    assert dst.layout == "tcnn"
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    back = TorchHashGrid(CFG)
    dst2 = TorchHashGrid(CFG, layout="tcnn")
    dst2.load_state_dict(back.state_dict())
    assert dst2.layout == "ngp"
    torch.testing.assert_close(dst2(x), back(x), rtol=0, atol=0)
    # a checkpoint from before the layout record (no _extra_state) is ngp and loads strictly
    old = TorchHashGrid(CFG, layout="tcnn")
    old.load_state_dict({"table": back.table.detach().clone()})
    assert old.layout == "ngp"


def test_wrong_size_names_the_config():
    other = HashGridConfig(num_levels=4, features_per_level=2, log2_hashmap_size=9, base_resolution=3,
                           max_resolution=40, backend="torch")
    with pytest.raises(EncoderLayoutError, match="another HashGridConfig"):
        TorchHashGrid(CFG).load_state_dict(TorchHashGrid(other, layout="tcnn").state_dict())
    with pytest.raises(EncoderLayoutError, match="do not fit"):
        convert_tcnn_params(torch.zeros(10), CFG)


def test_field_checkpoint_with_tcnn_tables_loads_into_a_cpu_field():
    """A whole field whose grids were tcnn-layout (as a GPU run saves them) loads into a CPU field, same output."""
    from backend.method.field.model import UltrametricField, UltrametricFieldConfig

    fcfg = UltrametricFieldConfig(density_grid=CFG, feature_grid=CFG, hidden_dim=16, color_hidden_dim=16,
                                  feature_hidden_dim=16, feature_dim=8)
    torch.manual_seed(0)
    gpu_like = UltrametricField(fcfg, "cpu")
    for name in ("density_encoder", "feature_encoder"):
        setattr(gpu_like, name, TorchHashGrid(CFG, layout="tcnn"))
    sd = gpu_like.state_dict()
    # what TcnnHashGrid writes: the same keys and layout record
    assert sd["feature_encoder._extra_state"] == {"layout": "tcnn"}
    cpu = UltrametricField(fcfg, "cpu")
    cpu.load_state_dict(sd)
    x = torch.rand(16, 3) - 0.5
    torch.testing.assert_close(cpu.raw_features(x), gpu_like.raw_features(x), rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not tcnn_available(), reason="tinycudann is not importable")
def test_tcnn_hash_grid_matches_the_torch_tcnn_layout():
    from backend.method.field.encoding import TcnnHashGrid

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cfg = HashGridConfig(num_levels=8, features_per_level=2, log2_hashmap_size=14, base_resolution=16,
                         max_resolution=512, backend="tcnn")
    enc = TcnnHashGrid(cfg, "cuda")
    sd = enc.state_dict()
    assert set(sd) == {"table", "_extra_state"} and sd["_extra_state"] == {"layout": "tcnn"}
    ref = TorchHashGrid(cfg, "cuda")
    ref.load_state_dict(sd)
    assert ref.layout == "tcnn"
    with torch.no_grad():
        enc.encoding.params.normal_()  # visible differences between levels/corners
    ref.load_state_dict(enc.state_dict())
    x = torch.rand(4096, 3, device="cuda")
    torch.testing.assert_close(enc(x), ref(x), rtol=2e-2, atol=2e-2)  # tcnn computes in fp16
    enc2 = TcnnHashGrid(cfg, "cuda")
    enc2.load_state_dict(ref.state_dict())
    torch.testing.assert_close(enc2.encoding.params, enc.encoding.params, rtol=0, atol=0)
    with pytest.raises(EncoderLayoutError, match="backend='torch'"):
        enc2.load_state_dict(TorchHashGrid(cfg, "cuda").state_dict())
