"""Train the spot U-Net on synthetic windows: ``python -m hrtem_core.train --seed 0``.

Writes ``models/unet_spots.pt`` (a float32 ``state_dict``) and ``models/unet_spots.json`` (the
architecture, every training setting, the generator version and ranges, the seed, validation
metrics, the training time and the library versions). On CPU the run is deterministic for a given
seed and thread count.

Training data come from :func:`hrtem_core.synthetic.make_dataset` (seed ``seed`` for training,
``seed + 1`` for validation); they can be cached as ``.npz`` under ``--cache-dir`` (never inside
the repository). Augmentation: the eight flips/transposes of the band (they keep a spot pattern a
valid, centro-symmetric spot pattern). Loss: binary cross-entropy with a positive weight plus a
soft Dice term, both over the pixels that are not *ignored* (borderline spots). Adam with a
linear warm-up and cosine decay of the learning rate.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from hrtem_core._files import atomic_write, write_text
from hrtem_core.synthetic import (
    GENERATOR_VERSION,
    SyntheticDataset,
    SyntheticRanges,
    make_dataset,
)
from hrtem_core.unet.load import DEFAULT_WEIGHTS, settings_path
from hrtem_core.unet.model import UNet, count_parameters
from hrtem_core.windows import UNET_INPUT_PX


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the trainer."""
    p = argparse.ArgumentParser(
        prog="python -m hrtem_core.train",
        description="Train the Bragg-spot U-Net on synthetic HRTEM windows.",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of data, init and batches")
    p.add_argument("--n-train", type=int, default=24000, help="training examples")
    p.add_argument("--n-val", type=int, default=2000, help="validation examples")
    p.add_argument("--epochs", type=int, default=18)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of Adam")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--base-channels", type=int, default=8)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--pos-weight", type=float, default=4.0, help="BCE weight of spot pixels")
    p.add_argument("--dice-weight", type=float, default=1.0)
    p.add_argument("--label-radius", type=float, default=1.5, help="label disk radius [band px]")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=2, help="processes generating the data")
    p.add_argument(
        "--cache-dir",
        type=lambda v: Path(v) if v else None,
        default=Path("/tmp/hrtem_unet_cache"),
        help="where generated data sets are cached (.npz); '' disables the cache",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="weights file (.pt)")
    p.add_argument("--device", default="cpu")
    return p


def _dataset(
    n: int, *, seed: int, ranges: SyntheticRanges, radius: float, workers: int, cache: Path | None
) -> SyntheticDataset:
    """Generate (or load from the cache) ``n`` examples."""
    path = None
    if cache is not None:
        path = cache / f"synth_v{GENERATOR_VERSION}_n{n}_s{seed}_r{radius}.npz"
        if path.is_file():
            with np.load(path) as z:
                return SyntheticDataset(**{k: z[k] for k in z.files})
    ds = make_dataset(n, seed=seed, ranges=ranges, radius_px=radius, workers=workers)
    if path is not None:
        atomic_write(path, lambda tmp: np.savez(tmp, **ds.__dict__))
    return ds


def _augment(x: torch.Tensor, code: int) -> torch.Tensor:
    """One of the 8 flips/transposes of (n, c, S, S) tensors."""
    if code & 1:
        x = torch.flip(x, dims=(-1,))
    if code & 2:
        x = torch.flip(x, dims=(-2,))
    if code & 4:
        x = x.transpose(-1, -2)
    return x


def spot_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    *,
    pos_weight: float,
    dice_weight: float,
) -> torch.Tensor:
    """Weighted BCE + soft Dice over the valid (not ignored) pixels.

    Parameters
    ----------
    logits, target, valid : tensors of shape (n, 1, S, S)
        Logits, 0/1 labels and 0/1 validity.
    """
    pw = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw, reduction="none")
    bce = (bce * valid).sum() / valid.sum().clamp_min(1.0)
    prob = torch.sigmoid(logits) * valid
    inter = (prob * target).sum()
    dice = 1.0 - (2.0 * inter + 1.0) / (prob.sum() + (target * valid).sum() + 1.0)
    return bce + dice_weight * dice


def object_scores(pred: np.ndarray, truth: np.ndarray, ignore: np.ndarray) -> dict:
    """Spot-level counts on the band grid: connected components, matched by overlap.

    A predicted component is a true positive when it touches a (1-px dilated) labelled spot,
    neutral when it touches only an ignored spot, a false positive otherwise; a labelled spot is
    missed when no predicted pixel touches it.
    """
    tp = fp = fn = 0
    st = ndi.generate_binary_structure(2, 2)
    for p, t, ig in zip(pred, truth, ignore, strict=True):
        t_d = ndi.binary_dilation(t, st)
        ig_d = ndi.binary_dilation(ig, st)
        lab, n = ndi.label(p, st)
        if n:
            hit_t = ndi.maximum(t_d, lab, np.arange(1, n + 1))
            hit_i = ndi.maximum(ig_d, lab, np.arange(1, n + 1))
            tp += int(np.sum(hit_t))
            fp += int(np.sum(~np.asarray(hit_t, bool) & ~np.asarray(hit_i, bool)))
        tlab, m = ndi.label(t, st)
        if m:
            p_d = ndi.binary_dilation(p, st)
            found = ndi.maximum(p_d, tlab, np.arange(1, m + 1))
            fn += int(m - np.sum(found))
    prec = tp / (tp + fp) if tp + fp else 1.0
    rec = (tp / (tp + fn)) if tp + fn else 1.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": prec, "recall": rec, "f1": f1}


def _predict(module: torch.nn.Module, bands: np.ndarray, device: torch.device) -> np.ndarray:
    module.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(bands), 256):
            xb = torch.from_numpy(bands[s : s + 256, None]).to(device)
            out.append(module(xb)[:, 0].cpu().numpy() > 0.0)
    return np.concatenate(out)


def evaluate(module: torch.nn.Module, ds: SyntheticDataset, device: torch.device) -> dict:
    """Validation metrics: spot-level scores overall and by dose, pixel F1."""
    pred = _predict(module, ds.bands, device)
    res = {"all": object_scores(pred, ds.masks, ds.ignore)}
    for name, lo, hi in (("low", 0, 10), ("moderate", 10, 100), ("high", 100, math.inf)):
        sel = (ds.dose_e_per_px >= lo) & (ds.dose_e_per_px < hi)
        res[f"dose_{name}"] = object_scores(pred[sel], ds.masks[sel], ds.ignore[sel])
    valid = ~ds.ignore
    tp = np.sum(pred & ds.masks & valid)
    res["pixel_f1"] = float(2 * tp / max(np.sum(pred & valid) + np.sum(ds.masks & valid), 1))
    empty = ds.n_spots == 0
    res["empty_windows_with_detections"] = float(np.mean(pred[empty].any(axis=(1, 2))))
    return res


def _datasets(
    args: argparse.Namespace, ranges: SyntheticRanges
) -> tuple[SyntheticDataset, SyntheticDataset, float]:
    """Training (seed ``seed``) and validation (seed ``seed + 1``) sets; seconds taken."""
    t0 = time.perf_counter()
    kw = {"ranges": ranges, "radius": args.label_radius, "workers": args.workers}
    train_ds = _dataset(args.n_train, seed=args.seed, cache=args.cache_dir, **kw)
    val_ds = _dataset(args.n_val, seed=args.seed + 1, cache=args.cache_dir, **kw)
    t_data = time.perf_counter() - t0
    print(
        f"data: {args.n_train} train + {args.n_val} val in {t_data:.0f} s; "
        f"spot pixels {train_ds.masks.mean():.4f}",
        flush=True,
    )
    return train_ds, val_ds, t_data


def _learning_rate(args: argparse.Namespace, step: int, total: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 at step ``total``."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    frac = (step - args.warmup_steps) / max(total - args.warmup_steps, 1)
    return args.lr * 0.5 * (1.0 + math.cos(math.pi * frac))


def _fit(
    module: torch.nn.Module,
    train_ds: SyntheticDataset,
    val_ds: SyntheticDataset,
    args: argparse.Namespace,
    *,
    rng: np.random.Generator,
    device: torch.device,
) -> list[dict]:
    """Train ``module`` in place for ``args.epochs`` epochs; the per-epoch history."""
    opt = torch.optim.Adam(module.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    total = math.ceil(args.n_train / args.batch_size) * args.epochs
    x_all = torch.from_numpy(train_ds.bands)
    y_all = torch.from_numpy(train_ds.masks.astype(np.float32))
    v_all = torch.from_numpy((~train_ds.ignore).astype(np.float32))
    history = []
    step = 0
    t1 = time.perf_counter()
    for epoch in range(args.epochs):
        module.train()
        order = rng.permutation(args.n_train)
        losses = []
        for s in range(0, args.n_train, args.batch_size):
            idx = torch.from_numpy(order[s : s + args.batch_size])
            code = int(rng.integers(8))
            xb, yb, vb = (_augment(t[idx, None], code).to(device) for t in (x_all, y_all, v_all))
            for g in opt.param_groups:
                g["lr"] = _learning_rate(args, step, total)
            opt.zero_grad(set_to_none=True)
            loss = spot_loss(
                module(xb), yb, vb, pos_weight=args.pos_weight, dice_weight=args.dice_weight
            )
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        val = evaluate(module, val_ds, device)
        seconds = time.perf_counter() - t1
        history.append(
            {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "val_f1": val["all"]["f1"],
                "seconds": seconds,
            }
        )
        print(
            f"epoch {epoch + 1}/{args.epochs} loss {np.mean(losses):.4f} "
            f"val P {val['all']['precision']:.3f} R {val['all']['recall']:.3f} "
            f"F1 {val['all']['f1']:.3f} (low {val['dose_low']['f1']:.3f}, "
            f"moderate {val['dose_moderate']['f1']:.3f}, high {val['dose_high']['f1']:.3f}) "
            f"[{seconds:.0f} s]",
            flush=True,
        )
    return history


def _settings(
    module: UNet,
    args: argparse.Namespace,
    *,
    ranges: SyntheticRanges,
    validation: dict,
    history: list[dict],
    seconds: tuple[float, float],
    argv: list[str] | None,
) -> dict:
    """The settings JSON written beside the weights (``seconds``: data, training)."""
    t_data, t_train = seconds
    return {
        "format": "hrtem-core spot U-Net v1",
        "architecture": {
            "name": "UNet",
            **module.architecture(),
            "input_px": UNET_INPUT_PX,
            "parameters": count_parameters(module),
            "input": "windows.log_band(windows.window_spectra(w), band_geometry(w, p, d_min_nm=0.1))",
            "output": "spot logits on the band grid; spot = sigmoid > 0.5",
        },
        "training": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("out", "cache_dir")
        },
        "loss": "BCE(pos_weight) + dice_weight * soft Dice over non-ignored pixels",
        "optimizer": "Adam, linear warm-up then cosine decay",
        "augmentation": "8 flips/transposes of the band",
        "generator": {
            "module": "hrtem_core.synthetic",
            "version": GENERATOR_VERSION,
            "train_seed": args.seed,
            "val_seed": args.seed + 1,
            "ranges": ranges.to_dict(),
        },
        "validation": validation,
        "history": history,
        "timing": {
            "data_generation_s": round(t_data, 1),
            "training_s": round(t_train, 1),
            "threads": args.threads,
            "cpu": platform.processor() or platform.machine(),
        },
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m hrtem_core.train " + " ".join(sys.argv[1:] if argv is None else argv),
    }


def train(args: argparse.Namespace, *, argv: list[str] | None = None) -> dict:
    """Run one training; returns the settings written beside the weights."""
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    device = torch.device(args.device)
    ranges = SyntheticRanges()
    train_ds, val_ds, t_data = _datasets(args, ranges)
    module = UNet(base_channels=args.base_channels, depth=args.depth).to(device)
    t1 = time.perf_counter()
    history = _fit(module, train_ds, val_ds, args, rng=rng, device=device)
    t_train = time.perf_counter() - t1

    module = module.cpu().float().eval()
    out = Path(args.out)
    atomic_write(out, lambda tmp: torch.save(module.state_dict(), tmp))
    settings = _settings(
        module,
        args,
        ranges=ranges,
        validation=evaluate(module, val_ds, torch.device("cpu")),
        history=history,
        seconds=(t_data, t_train),
        argv=argv,
    )
    js = write_text(settings_path(out), json.dumps(settings, indent=2) + "\n")
    print(f"wrote {out} and {js} (training {t_train:.0f} s)", flush=True)
    return settings


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m hrtem_core.train``."""
    args = build_parser().parse_args(argv)
    train(args, argv=argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
