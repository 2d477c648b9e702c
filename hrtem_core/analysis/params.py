"""Parameters of an analysis: :class:`AnalysisParams` (validated) and the progress callback type."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hrtem_core.detectors import DETECTORS, check_detector
from hrtem_core.errors import AnalysisParameterError
from hrtem_core.indexing import (
    AMBIGUITY_DECADES,
    MAX_CHANCE,
    MAX_ZONE_INDEX,
    check_decision_options,
    check_tolerances,
)

#: ``progress(fraction_done, message)``: fraction in [0, 1] and a short message.
ProgressCallback = Callable[[float, str], None]


@dataclass(frozen=True)
class AnalysisParams:
    """Parameters of one analysis.

    Attributes
    ----------
    window_px : int
        Window side w [px] (default 256).
    stride_px : int or None
        Step s between windows [px]; None: ``w // 2``.
    detector : {"unet", "classical"}
        Spot detector (default the U-Net).
    d_min_nm : float
        Smallest lattice spacing of interest [nm] (default 0.1).
    spacing_tol : float
        Relative spacing tolerance (default 0.03 = 3 %).
    angle_tol_deg : float
        Interplanar-angle tolerance [deg] (default 2).
    phases : tuple of str or None
        Card ids to index against; None: the enabled phases of the card database.
    include_forbidden : bool
        Also match forbidden reflections that double diffraction in the zone does not explain
        (with a lower weight); those it explains are always matched.
    ambiguity_decades : float
        Other phases whose odds against chance are within this many decades of the best are
        listed as alternatives (default 1; :mod:`hrtem_core.indexing`).
    max_chance : float
        A window names a phase only when the odds "chance : card" of its best match are at most
        this (default 0.01: score >= 0.99).
    max_zone_index : int
        Largest zone-axis index considered (default 3).
    batch_size : int
        Windows per block of whole window rows (at least one row): one detector call and one
        progress call per block; bounds the detector's memory on large images.
    """

    window_px: int = 256
    stride_px: int | None = None
    detector: str = "unet"
    d_min_nm: float = 0.1
    spacing_tol: float = 0.03
    angle_tol_deg: float = 2.0
    phases: tuple[str, ...] | None = None
    include_forbidden: bool = False
    ambiguity_decades: float = AMBIGUITY_DECADES
    max_chance: float = MAX_CHANCE
    max_zone_index: int = MAX_ZONE_INDEX
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.phases is not None and not isinstance(self.phases, tuple):
            object.__setattr__(self, "phases", tuple(self.phases))

    def validate(self) -> None:
        """Raise :class:`AnalysisParameterError` for invalid values (one line naming the parameter)."""
        check_detector(self.detector)
        check_tolerances(spacing_tol=self.spacing_tol, angle_tol_deg=self.angle_tol_deg)
        d = self.d_min_nm
        if (
            isinstance(d, bool)
            or not isinstance(d, int | float)
            or not (math.isfinite(d) and d > 0)
        ):
            raise AnalysisParameterError(f"smallest spacing d_min must be > 0 nm, got {d!r}")
        check_decision_options(
            ambiguity_decades=self.ambiguity_decades,
            max_chance=self.max_chance,
            max_zone_index=self.max_zone_index,
        )
        for name in ("window_px", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise AnalysisParameterError(f"{name} must be a positive integer, got {v!r}")
        s = self.stride_px
        if s is not None and (isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1):
            raise AnalysisParameterError(f"stride must be a positive integer, got {s!r}")
        if self.phases is not None:
            if not self.phases:
                raise AnalysisParameterError("phases: name at least one card id, or leave it unset")
            bad = [p for p in self.phases if not isinstance(p, str) or not p.strip()]
            if bad:
                raise AnalysisParameterError(f"phases must be card ids (text), got {bad[0]!r}")

    def to_dict(self) -> dict:
        """JSON-friendly dict of the parameters."""
        d = dataclasses.asdict(self)
        d["phases"] = None if self.phases is None else list(self.phases)
        return d

    def with_phase(self, card_id: str) -> AnalysisParams:
        """These parameters with ``card_id`` among the phases considered (unchanged when every
        enabled phase is, ``phases=None``, or when it is already listed): e.g. the card a
        distortion calibration is measured with."""
        if self.phases is None or card_id in self.phases:
            return self
        return dataclasses.replace(self, phases=(*self.phases, card_id))


__all__ = ["DETECTORS", "AnalysisParams", "ProgressCallback"]
