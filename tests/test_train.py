"""The trainer: a tiny, fast run writes loadable weights and a complete settings JSON."""

from __future__ import annotations

import json

import numpy as np
import torch

from hrtem_core.train import build_parser, main
from hrtem_core.unet.load import load_model, predict_masks

TINY = ["--n-train", "48", "--n-val", "16", "--epochs", "1", "--batch-size", "16",
        "--base-channels", "4", "--depth", "2", "--warmup-steps", "1", "--threads", "1",
        "--workers", "1"]  # fmt: skip


def test_empty_cache_dir_disables_the_cache():
    assert build_parser().parse_args(["--cache-dir", ""]).cache_dir is None
    assert build_parser().parse_args([]).cache_dir is not None


def test_tiny_training_writes_weights_and_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written to the working directory would show here
    out = tmp_path / "models" / "tiny.pt"
    argv = [*TINY, "--seed", "3", "--cache-dir", "", "--out", str(out)]
    assert main(argv) == 0
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["architecture"]["base_channels"] == 4
    assert settings["architecture"]["depth"] == 2
    assert settings["training"]["seed"] == 3 and settings["training"]["epochs"] == 1
    assert settings["generator"]["train_seed"] == 3 and settings["generator"]["val_seed"] == 4
    assert set(settings["validation"]["all"]) >= {"precision", "recall", "f1"}
    assert {"dose_low", "dose_moderate", "dose_high"} <= set(settings["validation"])
    assert settings["command"].endswith(" ".join(argv))
    # Nothing but the output folder was written (the empty cache dir means: no cache).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]
    model = load_model(out, device="cpu")
    masks = predict_masks(model, np.zeros((2, 64, 64), np.float32))
    assert masks.shape == (2, 64, 64) and masks.dtype == bool


def test_training_is_deterministic_for_a_seed(tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}.pt"
        main([*TINY, "--seed", "5", "--cache-dir", "", "--out", str(out)])
        outs.append(torch.load(out, map_location="cpu", weights_only=True))
    assert outs[0].keys() == outs[1].keys()
    for k in outs[0]:
        assert torch.equal(outs[0][k], outs[1][k]), k
