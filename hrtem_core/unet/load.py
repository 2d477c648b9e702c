"""Load the spot U-Net and predict spot masks for a batch of bands.

The weights are a float32 ``state_dict`` (``models/unet_spots.pt``) loaded with
``torch.load(..., weights_only=True)`` (no pickled code is executed); the settings JSON beside it
(``models/unet_spots.json``) holds the architecture, the training settings and the validation
metrics. Prediction is batched under ``torch.inference_mode()``, on CUDA when available; on a
CPU with native bfloat16 instructions (AVX512-BF16 or AMX) in bfloat16 by default (about twice
as fast; see :func:`load_model`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hrtem_core.errors import AnalysisParameterError, ReadError
from hrtem_core.unet.model import UNet, fuse_for_inference, to_inference_dtype
from hrtem_core.windows import UNET_INPUT_PX

#: The shipped weights; the settings JSON has the same stem.
DEFAULT_WEIGHTS: Path = Path(__file__).resolve().parents[2] / "models" / "unet_spots.pt"

#: Accepted values of ``load_model(precision=...)``.
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class SpotModel:
    """A loaded spot U-Net.

    Attributes
    ----------
    module : torch.nn.Module
        The network, in eval mode, on ``device``.
    device : torch.device
    settings : dict
        The settings JSON (architecture, training, metrics).
    input_px : int
        Side S of the band it expects [px].
    inference_module : torch.nn.Module or None
        The same network with each convolution + batch norm folded into one convolution
        (:func:`~hrtem_core.unet.model.fuse_for_inference`) in the channels-last memory format
        (2.2x faster on CPU, same logits within 1e-5), in ``dtype``, used by
        :func:`predict_logits`; None: ``module`` is used.
    dtype : torch.dtype
        Floating-point type of ``inference_module`` (``torch.float32`` or ``torch.bfloat16``):
        :func:`predict_logits` casts the bands to it and returns float32 logits.
    """

    module: torch.nn.Module
    device: torch.device
    settings: dict
    input_px: int
    inference_module: torch.nn.Module | None = None
    dtype: torch.dtype = torch.float32


def settings_path(weights_path: str | Path) -> Path:
    """The settings JSON beside a weights file (same stem, ``.json``)."""
    return Path(weights_path).with_suffix(".json")


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise AnalysisParameterError(f"unknown torch device {device!r}: {exc}") from exc


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 dot products natively (AVX512-BF16 or AMX tiles).

    Without them oneDNN emulates bfloat16 and is slower than float32. False when torch cannot
    tell.
    """
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except Exception:  # private torch API: absent or failing means "do not rely on it"
        return False


def _pick_dtype(precision: str, dev: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise AnalysisParameterError(
            f"unknown U-Net precision {precision!r}: choose one of {', '.join(PRECISIONS)}"
        )
    if precision == "auto":
        use_bf16 = dev.type == "cpu" and cpu_has_native_bfloat16()
        return torch.bfloat16 if use_bf16 else torch.float32
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def load_model(
    path: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    precision: str = "auto",
) -> SpotModel:
    """Load the spot U-Net from a ``state_dict`` file and its settings JSON.

    Parameters
    ----------
    path : str or Path, optional
        Weights file (default :data:`DEFAULT_WEIGHTS`); the settings JSON must lie beside it.
    device : str or torch.device, keyword-only
        Default: CUDA when available, else CPU.
    precision : {"auto", "float32", "bfloat16"}, keyword-only
        Arithmetic of the inference network. ``"auto"`` (default): bfloat16 on a CPU with native
        bfloat16 instructions (:func:`cpu_has_native_bfloat16`; about 2.2x faster than float32
        there), float32 elsewhere (GPUs included). The weights are stored and trained in
        float32; bfloat16 rounds activations to 8 significant bits, which moves logits by a
        few hundredths and so can flip a pixel right at the 0.5 threshold: the evaluation
        (``benchmarks/eval_detectors.py --precision``) measures both. Spot positions and
        spacings always come from the float32 FFT.

    Returns
    -------
    SpotModel

    Raises
    ------
    ReadError
        The weights or settings file is missing, unreadable, or does not fit the architecture.
    AnalysisParameterError
        An unknown device or precision.
    """
    weights = Path(path) if path is not None else DEFAULT_WEIGHTS
    js = settings_path(weights)
    if not weights.is_file():
        raise ReadError(
            f"U-Net weights not found: {weights} (train them with `python -m hrtem_core.train`)"
        )
    if not js.is_file():
        raise ReadError(f"U-Net settings file not found beside the weights: {js}")
    try:
        settings = json.loads(js.read_text(encoding="utf-8"))
        arch = settings["architecture"]
        module = UNet(
            in_channels=int(arch.get("in_channels", 1)),
            base_channels=int(arch["base_channels"]),
            depth=int(arch["depth"]),
        )
        input_px = int(arch.get("input_px", UNET_INPUT_PX))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReadError(f"U-Net settings file {js} is not valid: {exc}") from exc
    dev = _pick_device(device)
    dtype = _pick_dtype(precision, dev)
    try:
        state = torch.load(weights, map_location=dev, weights_only=True)
        module.load_state_dict(state)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReadError(f"U-Net weights {weights} are corrupt or do not fit: {msg}") from exc
    module.to(dev).eval()
    return SpotModel(
        module=module,
        device=dev,
        settings=settings,
        input_px=input_px,
        inference_module=to_inference_dtype(fuse_for_inference(module), dtype).to(
            memory_format=torch.channels_last
        ),
        dtype=dtype,
    )


def _check_bands(model: SpotModel, bands: np.ndarray) -> np.ndarray:
    x = np.asarray(bands, dtype=np.float32)
    s = model.input_px
    if x.ndim != 3 or x.shape[1:] != (s, s):
        raise AnalysisParameterError(f"expected bands of shape (n, {s}, {s}), got {x.shape}")
    return x


@contextlib.contextmanager
def single_torch_thread(model: SpotModel) -> Iterator[None]:
    """Within the block torch uses one intra-op CPU thread (restored afterwards).

    For callers that run :func:`predict_masks` from several threads of their own.
    """
    before = torch.get_num_threads()
    change = model.device.type == "cpu" and before != 1
    if change:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(before)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def predict_logits(
    model: SpotModel, bands: np.ndarray, *, batch_size: int = 64, threads: int | None = None
) -> np.ndarray:
    """Spot logits for bands from :func:`hrtem_core.windows.log_band`.

    Parameters
    ----------
    model : SpotModel
    bands : ndarray, shape (n, S, S), float32
    batch_size : int, keyword-only
        Windows per forward pass (64: the feature maps of a batch stay in the CPU caches; larger
        batches were slower on CPU).
    threads : int or None, keyword-only
        On CPU: batches run concurrently in this many Python threads, each with one torch
        intra-op thread (torch's setting is restored afterwards); default: the available cores,
        at most 4. The convolutions of a 64 x 64 band are small: with torch's own intra-op
        threads every layer waits for the slowest core, and on the 2-core machine with other
        jobs running 841 windows took 10 s with two intra-op threads against 0.8-1.1 s this way.

    Returns
    -------
    ndarray, shape (n, S, S), float32
    """
    x = _check_bands(model, bands)
    if batch_size < 1:
        raise AnalysisParameterError(f"batch size must be >= 1, got {batch_size}")
    if threads is not None and threads < 1:
        raise AnalysisParameterError(f"threads must be >= 1, got {threads}")
    net = model.inference_module if model.inference_module is not None else model.module
    dtype = model.dtype if model.inference_module is not None else torch.float32
    out = np.empty(x.shape, dtype=np.float32)
    starts = range(0, len(x), batch_size)

    def run(start: int) -> None:
        with torch.inference_mode():
            xb = torch.from_numpy(x[start : start + batch_size, None]).to(model.device, dtype)
            xb = xb.contiguous(memory_format=torch.channels_last)
            out[start : start + batch_size] = net(xb)[:, 0].float().cpu().numpy()

    if model.device.type != "cpu":
        for start in starts:
            run(start)
        return out
    n_threads = min(4, _available_cores()) if threads is None else int(threads)
    n_threads = max(1, min(n_threads, len(starts)))
    with single_torch_thread(model):
        if n_threads == 1:
            for start in starts:
                run(start)
        else:
            with ThreadPoolExecutor(n_threads) as pool:
                list(pool.map(run, starts))
    return out


def predict_masks(
    model: SpotModel,
    bands: np.ndarray,
    *,
    batch_size: int = 64,
    threshold: float = 0.5,
    threads: int | None = None,
) -> np.ndarray:
    """Spot masks on the band grid: ``sigmoid(logit) > threshold``.

    Parameters
    ----------
    model : SpotModel
    bands : ndarray, shape (n, S, S), float32
        ``log_band(window_spectra(windows), band_geometry(w, p, d_min_nm=0.1))``.
    batch_size : int, keyword-only
    threshold : float, keyword-only
        Probability threshold in (0, 1).
    threads : int or None, keyword-only
        torch CPU threads (see :func:`predict_logits`).

    Returns
    -------
    ndarray, shape (n, S, S), bool
    """
    if not 0.0 < threshold < 1.0:
        raise AnalysisParameterError(f"threshold must lie in (0, 1), got {threshold}")
    logit_threshold = math.log(threshold / (1.0 - threshold))
    logits = predict_logits(model, bands, batch_size=batch_size, threads=threads)
    return logits > logit_threshold


__all__ = [
    "DEFAULT_WEIGHTS",
    "PRECISIONS",
    "SpotModel",
    "cpu_has_native_bfloat16",
    "load_model",
    "predict_logits",
    "predict_masks",
    "settings_path",
    "single_torch_thread",
]
