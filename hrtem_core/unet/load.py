"""Load the spot U-Net and predict spot masks for a batch of bands.

The weights are a float32 ``state_dict`` (``models/unet_spots.pt``) loaded with
``torch.load(..., weights_only=True)`` (no pickled code is executed); the settings JSON beside it
(``models/unet_spots.json``) holds the architecture, the training settings and the validation
metrics. Prediction is batched under ``torch.inference_mode()``, on CUDA when available.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hrtem_core.errors import AnalysisParameterError, ReadError
from hrtem_core.unet.model import UNet
from hrtem_core.windows import UNET_INPUT_PX

#: The shipped weights; the settings JSON has the same stem.
DEFAULT_WEIGHTS: Path = Path(__file__).resolve().parents[2] / "models" / "unet_spots.pt"


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
    """

    module: torch.nn.Module
    device: torch.device
    settings: dict
    input_px: int


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


def load_model(
    path: str | Path | None = None, *, device: str | torch.device | None = None
) -> SpotModel:
    """Load the spot U-Net from a ``state_dict`` file and its settings JSON.

    Parameters
    ----------
    path : str or Path, optional
        Weights file (default :data:`DEFAULT_WEIGHTS`); the settings JSON must lie beside it.
    device : str or torch.device, keyword-only
        Default: CUDA when available, else CPU.

    Returns
    -------
    SpotModel

    Raises
    ------
    ReadError
        The weights or settings file is missing, unreadable, or does not fit the architecture.
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
    try:
        state = torch.load(weights, map_location=dev, weights_only=True)
        module.load_state_dict(state)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReadError(f"U-Net weights {weights} are corrupt or do not fit: {msg}") from exc
    module.to(dev).eval()
    return SpotModel(module=module, device=dev, settings=settings, input_px=input_px)


def _check_bands(model: SpotModel, bands: np.ndarray) -> np.ndarray:
    x = np.asarray(bands, dtype=np.float32)
    s = model.input_px
    if x.ndim != 3 or x.shape[1:] != (s, s):
        raise AnalysisParameterError(f"expected bands of shape (n, {s}, {s}), got {x.shape}")
    return x


def predict_logits(model: SpotModel, bands: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Spot logits for bands from :func:`hrtem_core.windows.log_band`.

    Parameters
    ----------
    model : SpotModel
    bands : ndarray, shape (n, S, S), float32
    batch_size : int, keyword-only
        Windows per forward pass.

    Returns
    -------
    ndarray, shape (n, S, S), float32
    """
    x = _check_bands(model, bands)
    if batch_size < 1:
        raise AnalysisParameterError(f"batch size must be >= 1, got {batch_size}")
    out = np.empty(x.shape, dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[start : start + batch_size, None]).to(model.device)
            out[start : start + batch_size] = model.module(xb)[:, 0].float().cpu().numpy()
    return out


def predict_masks(
    model: SpotModel, bands: np.ndarray, *, batch_size: int = 256, threshold: float = 0.5
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

    Returns
    -------
    ndarray, shape (n, S, S), bool
    """
    if not 0.0 < threshold < 1.0:
        raise AnalysisParameterError(f"threshold must lie in (0, 1), got {threshold}")
    logit_threshold = math.log(threshold / (1.0 - threshold))
    return predict_logits(model, bands, batch_size=batch_size) > logit_threshold


__all__ = [
    "DEFAULT_WEIGHTS",
    "SpotModel",
    "load_model",
    "predict_logits",
    "predict_masks",
    "settings_path",
]
