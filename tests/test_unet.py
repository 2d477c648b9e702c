"""The spot U-Net: shapes, save/load round trip, batched prediction, errors, shipped weights."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hrtem_core.errors import AnalysisParameterError, HRTEMError, ReadError
from hrtem_core.unet import (
    DEFAULT_WEIGHTS,
    UNet,
    count_parameters,
    fuse_for_inference,
    load_model,
    predict_logits,
    predict_masks,
)
from hrtem_core.unet import load as unet_load
from hrtem_core.unet.model import to_inference_dtype
from hrtem_core.windows import band_geometry, log_band, window_spectra


def _save_tiny(tmp_path, *, base_channels: int = 4, depth: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    net = UNet(base_channels=base_channels, depth=depth)
    # Move the batch-norm statistics off their defaults so the round trip checks them too.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        net.head.bias.fill_(0.0)
    net.eval()
    path = tmp_path / "tiny.pt"
    torch.save(net.state_dict(), path)
    settings = {"architecture": {**net.architecture(), "input_px": 64}}
    path.with_suffix(".json").write_text(json.dumps(settings), encoding="utf-8")
    return net, path


@pytest.mark.parametrize(("base", "depth"), [(4, 1), (4, 2), (4, 3), (8, 4)])
def test_unet_output_shape(base, depth):
    net = UNet(base_channels=base, depth=depth).eval()
    x = torch.randn(3, 1, 64, 64)
    with torch.inference_mode():
        y = net(x)
    assert y.shape == (3, 1, 64, 64)
    assert y.dtype == torch.float32


def test_parameter_count_formula():
    # depth 1: two 3x3 convs (1->4, 4->4, no bias) + 2 batch norms + 1x1 head.
    net = UNet(base_channels=4, depth=1)
    expected = 1 * 4 * 9 + 4 * 4 * 9 + 2 * (2 * 4) + (4 + 1)
    assert count_parameters(net) == expected
    assert count_parameters(UNet(base_channels=8, depth=4)) < 300_000


def test_forward_is_deterministic(rng):
    net = UNet(base_channels=4, depth=2).eval()
    x = torch.from_numpy(rng.standard_normal((4, 1, 64, 64)).astype(np.float32))
    with torch.inference_mode():
        a = net(x).numpy()
        b = net(x).numpy()
    np.testing.assert_array_equal(a, b)


def test_save_load_round_trip(tmp_path, rng):
    net, path = _save_tiny(tmp_path)
    model = load_model(path, device="cpu", precision="float32")
    assert model.device.type == "cpu"
    assert model.input_px == 64
    assert not model.module.training
    state = model.module.state_dict()
    for k, v in net.state_dict().items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=0)
    bands = rng.standard_normal((5, 64, 64)).astype(np.float32)
    with torch.inference_mode():
        ref = net(torch.from_numpy(bands[:, None]))[:, 0].numpy()
    np.testing.assert_allclose(predict_logits(model, bands), ref, rtol=1e-6, atol=1e-6)


def test_fused_inference_module_matches_the_network(tmp_path, rng):
    net, path = _save_tiny(tmp_path, base_channels=4, depth=3)
    fused = fuse_for_inference(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # original unchanged
    x = torch.from_numpy(rng.standard_normal((6, 1, 64, 64)).astype(np.float32))
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), net(x), rtol=1e-5, atol=1e-5)
    model = load_model(path, device="cpu")
    assert model.inference_module is not None
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.inference_module.modules())


def test_predict_masks_threshold_and_dtype(tmp_path, rng):
    _, path = _save_tiny(tmp_path)
    model = load_model(path, device="cpu")
    bands = rng.standard_normal((7, 64, 64)).astype(np.float32)
    logits = predict_logits(model, bands)
    for thr in (0.2, 0.5, 0.8):
        masks = predict_masks(model, bands, threshold=thr)
        assert masks.dtype == bool and masks.shape == (7, 64, 64)
        np.testing.assert_array_equal(masks, logits > math.log(thr / (1 - thr)))
    # A higher threshold never adds pixels.
    assert (
        predict_masks(model, bands, threshold=0.8) <= predict_masks(model, bands, threshold=0.2)
    ).all()
    # The random net is neither all-on nor all-off at 0.5 (the comparison is meaningful).
    m = predict_masks(model, bands)
    assert 0 < m.mean() < 1


def test_predict_masks_batching_equivalence(tmp_path, rng):
    _, path = _save_tiny(tmp_path)
    model = load_model(path, device="cpu")
    bands = rng.standard_normal((70, 64, 64)).astype(np.float32)
    one = predict_masks(model, bands, batch_size=1)
    many = predict_masks(model, bands, batch_size=64)
    np.testing.assert_array_equal(one, many)
    assert predict_masks(model, bands[:0]).shape == (0, 64, 64)


def test_predict_threads_give_the_same_masks_and_restore_torch(tmp_path, rng):
    _, path = _save_tiny(tmp_path)
    model = load_model(path, device="cpu")
    bands = rng.standard_normal((130, 64, 64)).astype(np.float32)
    before = torch.get_num_threads()
    one = predict_logits(model, bands, threads=1, batch_size=16)
    for threads in (2, 3, None):
        np.testing.assert_array_equal(
            predict_logits(model, bands, threads=threads, batch_size=16), one
        )
        assert torch.get_num_threads() == before
    with pytest.raises(AnalysisParameterError, match="threads"):
        predict_logits(model, bands, threads=0)


def test_predict_masks_rejects_bad_input(tmp_path):
    _, path = _save_tiny(tmp_path)
    model = load_model(path, device="cpu")
    with pytest.raises(AnalysisParameterError, match="shape"):
        predict_masks(model, np.zeros((2, 32, 32), np.float32))
    with pytest.raises(AnalysisParameterError, match="threshold"):
        predict_masks(model, np.zeros((1, 64, 64), np.float32), threshold=1.0)
    with pytest.raises(AnalysisParameterError, match="batch size"):
        predict_masks(model, np.zeros((1, 64, 64), np.float32), batch_size=0)


def test_load_model_missing_file(tmp_path):
    with pytest.raises(ReadError, match="not found"):
        load_model(tmp_path / "nothing.pt")


def test_load_model_missing_settings(tmp_path):
    _, path = _save_tiny(tmp_path)
    path.with_suffix(".json").unlink()
    with pytest.raises(ReadError, match="settings"):
        load_model(path)


def test_load_model_corrupt_weights(tmp_path):
    _, path = _save_tiny(tmp_path)
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(ReadError, match="corrupt") as info:
        load_model(path)
    assert isinstance(info.value, HRTEMError)
    assert "\n" not in str(info.value)


def test_load_model_wrong_architecture(tmp_path):
    _, path = _save_tiny(tmp_path)
    js = path.with_suffix(".json")
    js.write_text(json.dumps({"architecture": {"base_channels": 8, "depth": 2}}))
    with pytest.raises(ReadError, match="do not fit"):
        load_model(path)


def test_load_model_bad_settings_json(tmp_path):
    _, path = _save_tiny(tmp_path)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(ReadError, match="not valid"):
        load_model(path)


# ------------------------------------------------------------------------------------------
# The shipped weights
# ------------------------------------------------------------------------------------------


def test_shipped_settings_describe_the_weights():
    settings = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    arch = settings["architecture"]
    assert arch["parameters"] == count_parameters(
        UNet(base_channels=arch["base_channels"], depth=arch["depth"])
    )
    assert arch["parameters"] < 500_000
    assert settings["generator"]["version"]
    assert settings["training"]["seed"] == 0
    assert DEFAULT_WEIGHTS.stat().st_size < 5_000_000
    state = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())


@pytest.mark.slow
def test_shipped_model_recovers_spacing_end_to_end():
    from hrtem_core.spots import pairs_from_mask
    from hrtem_core.synthetic import synthetic_example

    model = load_model(device="cpu")
    w, p = 256, (0.02, 0.02)
    spacing = 0.235  # nm, e.g. Au(111)
    ex = synthetic_example(
        np.random.default_rng(3),
        window_px=w,
        pixel_size_nm=p,
        crystal=True,
        n_lattices=1,
        spacing_nm=spacing,
        angle_deg=30.0,
        one_dimensional=True,
        full_cover=True,
        amplitude=0.1,
        amorphous_rms=0.1,
        dose_e_per_px=100.0,
        artefacts=False,
    )
    geometry = band_geometry(w, p, d_min_nm=0.1)
    spectra = window_spectra(ex.window[None])
    mask = predict_masks(model, log_band(spectra, geometry))[0]
    pairs = pairs_from_mask(mask, spectra[0], geometry, pixel_size_nm=p)
    assert pairs, "no spot pair found on a clear lattice"
    best = min(pairs, key=lambda q: abs(q.spacing_nm - spacing))
    assert abs(best.spacing_nm - spacing) / spacing < 0.01
    assert abs(((best.angle_deg - 30.0) + 90) % 180 - 90) < 1.0

    # An amorphous window (same noise, no crystal) gives no pair.
    amorphous = synthetic_example(
        np.random.default_rng(4),
        window_px=w,
        pixel_size_nm=p,
        crystal=False,
        amorphous_rms=0.1,
        dose_e_per_px=100.0,
        artefacts=False,
    )
    spectra = window_spectra(amorphous.window[None])
    mask = predict_masks(model, log_band(spectra, geometry))[0]
    assert pairs_from_mask(mask, spectra[0], geometry, pixel_size_nm=p) == ()


def _fringes(w, p, gs, rng, *, noise):
    """Cosine fringes of spatial frequencies gs [(gy, gx) 1/nm] plus white noise, (w, w) float32."""
    y = np.arange(w)[:, None] * p[0]
    x = np.arange(w)[None, :] * p[1]
    img = noise * rng.standard_normal((w, w))
    for gy, gx in gs:
        img += np.cos(2 * np.pi * (gy * y + gx * x) + rng.uniform(0, 2 * np.pi))
    return img.astype(np.float32)


def test_precision_auto_follows_the_cpu(tmp_path, monkeypatch):
    _, path = _save_tiny(tmp_path)
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(unet_load, "cpu_has_native_bfloat16", lambda native=native: native)
        assert load_model(path, device="cpu").dtype == expected
        assert load_model(path, device="cpu", precision="float32").dtype == torch.float32
        assert load_model(path, device="cpu", precision="bfloat16").dtype == torch.bfloat16
    with pytest.raises(AnalysisParameterError, match="precision"):
        load_model(path, device="cpu", precision="float16")
    assert isinstance(unet_load.cpu_has_native_bfloat16(), bool)


def test_bfloat16_body_float32_head(tmp_path, rng):
    net, path = _save_tiny(tmp_path, base_channels=4, depth=3)
    mixed = to_inference_dtype(fuse_for_inference(net), torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in mixed.down.parameters())
    assert all(p.dtype == torch.float32 for p in mixed.head.parameters())
    x = torch.from_numpy(rng.standard_normal((6, 1, 64, 64)).astype(np.float32))
    with torch.inference_mode():
        y = mixed(x.to(torch.bfloat16))
        ref = net(x)
    assert y.dtype == torch.float32
    # Logits are float32 sums over bfloat16 features: close, and not quantized to 8 bits.
    torch.testing.assert_close(y, ref, rtol=0.05, atol=0.05)
    assert torch.unique(y).numel() > 0.9 * y.numel()
    model = load_model(path, device="cpu", precision="bfloat16")
    bands = x[:, 0].numpy()
    logits = predict_logits(model, bands)
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, ref[:, 0].numpy(), rtol=0.05, atol=0.05)


def test_shipped_model_in_bfloat16_agrees_with_float32(rng):
    """Masks of the shipped U-Net in both precisions agree on real (synthetic) bands."""
    from hrtem_core.synthetic import SyntheticRanges, example_arrays, synthetic_example

    f32 = load_model(device="cpu", precision="float32")
    b16 = load_model(device="cpu", precision="bfloat16")
    bands = np.stack(
        [
            example_arrays(
                synthetic_example(np.random.default_rng([5, i]), ranges=SyntheticRanges())
            )[0]
            for i in range(24)
        ]
    )
    a, b = predict_logits(f32, bands), predict_logits(b16, bands)
    assert np.abs(a - b).max() < 1.0
    assert np.median(np.abs(a - b)) < 0.05
    assert ((a > 0) != (b > 0)).mean() < 2e-3
    assert (a > 0).any()


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_shipped_model_known_answers_across_windows_and_pixel_sizes(precision):
    """The shipped U-Net through detect_pairs: spacings within the targets, angles, no false spots.

    Two crossed fringe sets per window over window sizes 128-512 px, pixel sizes 0.01-0.05 nm
    (square and 3 % non-square) and spacings 0.15-0.8 nm; targets for spots at l >= 10 FFT px:
    median |dd|/d <= 0.3 %, 95th percentile <= 1 %; angles within 0.5 degrees.
    """
    from hrtem_core.spots import detect_pairs

    model = load_model(device="cpu", precision=precision)
    rng = np.random.default_rng(11)
    errors, n_cases = [], 0
    for w, p in (
        (128, (0.05, 0.05)),
        (256, (0.02, 0.02)),
        (256, (0.0206, 0.02)),
        (256, (0.035, 0.035)),
        (512, (0.01, 0.0103)),
    ):
        for d in (0.15, 0.25, 0.35, 0.5, 0.8):
            l1 = w * min(p) / d
            if l1 < 10:  # the targets are stated for l >= 10 FFT px
                continue
            ang = float(rng.uniform(0, 180))
            d2 = d * 0.85
            gs = []
            for dd, aa in ((d, ang), (d2, ang + float(rng.uniform(40, 80)))):
                a = math.radians(aa)
                gs.append((-math.sin(a) / dd, math.cos(a) / dd))
            win = _fringes(w, p, gs, rng, noise=1.5)
            pairs = detect_pairs(win[None], pixel_size_nm=p, detector="unet", model=model)[0]
            assert len(pairs) == 2, (w, p, d, pairs)
            n_cases += 1
            for gy, gx in gs:
                best = min(
                    pairs,
                    key=lambda q: min(
                        math.hypot(q.gy_nm_inv - gy, q.gx_nm_inv - gx),
                        math.hypot(q.gy_nm_inv + gy, q.gx_nm_inv + gx),
                    ),
                )
                d_true = 1.0 / math.hypot(gy, gx)
                errors.append(abs(best.spacing_nm - d_true) / d_true)
                a_true = math.degrees(math.atan2(-gy, gx)) % 180.0
                assert abs((best.angle_deg - a_true + 90.0) % 180.0 - 90.0) < 0.5
    errors = np.asarray(errors)
    assert n_cases >= 12
    assert np.median(errors) <= 0.003
    assert np.percentile(errors, 95) <= 0.01
    # Pure noise windows: no spots.
    noise = rng.standard_normal((16, 256, 256)).astype(np.float32)
    found = detect_pairs(noise, pixel_size_nm=0.02, detector="unet", model=model)
    assert sum(len(f) for f in found) == 0
