"""The spot U-Net: architecture (:mod:`.model`), loading and batched prediction (:mod:`.load`)."""

from hrtem_core.unet.load import (
    DEFAULT_WEIGHTS,
    SpotModel,
    load_model,
    predict_logits,
    predict_masks,
)
from hrtem_core.unet.model import UNet, count_parameters, fuse_for_inference

__all__ = [
    "DEFAULT_WEIGHTS",
    "SpotModel",
    "UNet",
    "count_parameters",
    "fuse_for_inference",
    "load_model",
    "predict_logits",
    "predict_masks",
]
