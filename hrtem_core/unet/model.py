"""A small U-Net that marks Bragg spots on the 64 x 64 log-magnitude band of a window's FFT.

Encoder-decoder with skip connections (Ronneberger et al., 2015): ``depth`` resolution levels,
each two 3x3 convolutions with batch normalisation and ReLU; 2x2 max pooling down, 2x2 transposed
convolutions up; a 1x1 convolution gives one logit per band pixel (spot / background). Channels
double at each level from ``base_channels``.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

#: Initial bias of the output logit: spots cover about 1 % of the band, so start near that prior.
_PRIOR_LOGIT = -4.0


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net returning spot logits.

    Parameters
    ----------
    in_channels : int, keyword-only
        Input channels (1: the standardized log band).
    base_channels : int, keyword-only
        Channels of the first level; level ``i`` has ``base_channels * 2**i``.
    depth : int, keyword-only
        Number of resolution levels (``depth - 1`` poolings); the input side must be divisible
        by ``2**(depth - 1)``.

    Notes
    -----
    ``forward(x)`` takes ``x`` of shape (n, in_channels, S, S) float32 and returns logits of shape
    (n, 1, S, S); ``sigmoid(logit) > 0.5`` marks a spot pixel.
    """

    def __init__(self, *, in_channels: int = 1, base_channels: int = 16, depth: int = 4) -> None:
        super().__init__()
        if depth < 1 or base_channels < 1 or in_channels < 1:
            raise ValueError("UNet needs depth >= 1, base_channels >= 1 and in_channels >= 1")
        self.in_channels = int(in_channels)
        self.base_channels = int(base_channels)
        self.depth = int(depth)
        chans = [base_channels * 2**i for i in range(depth)]
        self.down = nn.ModuleList()
        c_prev = in_channels
        for c in chans:
            self.down.append(_double_conv(c_prev, c))
            c_prev = c
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(depth - 1, 0, -1):
            self.up.append(nn.ConvTranspose2d(chans[i], chans[i - 1], 2, stride=2))
            self.dec.append(_double_conv(2 * chans[i - 1], chans[i - 1]))
        self.head = nn.Conv2d(chans[0], 1, 1)
        nn.init.constant_(self.head.bias, _PRIOR_LOGIT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Spot logits, shape (n, 1, S, S), for input of shape (n, in_channels, S, S)."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth - 1:
                skips.append(x)
                x = self.pool(x)
        for up, dec in zip(self.up, self.dec, strict=True):
            x = up(x)
            x = dec(torch.cat([skips.pop(), x], dim=1))
        return self.head(x)

    def architecture(self) -> dict:
        """The constructor arguments, for the settings JSON beside the weights."""
        return {
            "in_channels": self.in_channels,
            "base_channels": self.base_channels,
            "depth": self.depth,
        }


def fuse_for_inference(net: nn.Module) -> nn.Module:
    """An eval-mode copy of ``net`` with every convolution + batch norm folded into one convolution.

    In eval mode a batch norm is an affine map per channel, so ``BN(conv(x))`` equals a single
    convolution with rescaled weights and a shifted bias; the copy gives the same logits (up to
    float32 rounding, about 1e-6) with fewer passes over the feature maps. The batch norms become
    ``nn.Identity`` so the module layout (and ``forward``) stays the same. ``net`` is unchanged.
    """
    fused = copy.deepcopy(net).eval()
    for seq in fused.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in itertools.pairwise(names):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused


class _Float32(nn.Module):
    """Casts its input to float32 (the logit head of a reduced-precision network)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()


def to_inference_dtype(net: UNet, dtype: torch.dtype) -> UNet:
    """``net`` (modified in place) with its body in ``dtype`` and its logit head in float32.

    For bfloat16 inference on CPU: the convolutions run in ``dtype``, and the last feature maps
    are cast to float32 before the 1x1 head, so the logits are a float32 sum over the channels.
    Computed in bfloat16 (8 significant bits) the logits themselves would be quantized into
    plateaus of equal values, which split single spots at their many tied "peaks"
    (:func:`hrtem_core.spots.split_at_peaks`). The input must be cast to ``dtype`` by the
    caller; the output is float32.
    """
    head = net.head
    net.to(dtype)
    if dtype != torch.float32:
        net.head = nn.Sequential(_Float32(), head.float())
    return net


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["UNet", "count_parameters", "fuse_for_inference", "to_inference_dtype"]
