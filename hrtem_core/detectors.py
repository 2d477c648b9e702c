"""Spot detectors behind one protocol, chosen in one place (:func:`detector_for`).

A :class:`SpotDetector` finds the Bragg-spot pairs of the windows of an image
(:meth:`~SpotDetector.pairs_in_image`, what the analysis calls) and the detector mask of given
windows (:meth:`~SpotDetector.window_masks`, what the dashboard's window detail shows). The two
implementations wrap the public functions of :mod:`hrtem_core.spots` and :mod:`hrtem_core.unet`:

* :class:`UNetDetector` -- the trained U-Net on the log band (``unet.load.predict_masks``);
* :class:`ClassicalDetector` -- peaks of the background-subtracted log-spectrum
  (``spots.classical_masks``).

Both feed the same pair finding (``spots.detect_pairs_in_image``); the result does not depend on
which caller chose the detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from hrtem_core.errors import AnalysisParameterError, HRTEMError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from hrtem_core.spots import SpotPair
    from hrtem_core.unet.load import SpotModel
    from hrtem_core.windows import BandGeometry, WindowGrid

#: Spot detectors the analysis accepts.
DETECTORS: tuple[str, ...] = ("unet", "classical")


@runtime_checkable
class SpotDetector(Protocol):
    """What the analysis and the dashboard need of a spot detector."""

    #: One of :data:`DETECTORS`.
    name: str

    def pairs_in_image(
        self,
        image: np.ndarray,
        grid: WindowGrid,
        *,
        rows: tuple[int, int] | None,
        pixel_size_nm: tuple[float, float],
        d_min_nm: float,
        workers: int = -1,
    ) -> list[tuple[SpotPair, ...]]:
        """Spot pairs of the windows of ``grid`` in window rows ``rows`` (row-major)."""
        ...

    def window_masks(
        self, spectra: np.ndarray, geometry: BandGeometry, *, pixel_size_nm: tuple[float, float]
    ) -> np.ndarray:
        """Detector masks, shape (n, S, S) bool, of window spectra of shape (n, w, w)."""
        ...


def _pairs(image: Any, grid: Any, detector: str, model: Any, **kw: Any) -> list:
    from hrtem_core import spots  # looked up at call time (tests replace it)

    return spots.detect_pairs_in_image(image, grid, detector=detector, model=model, **kw)


@dataclass(frozen=True)
class UNetDetector:
    """The U-Net detector with its weights."""

    model: SpotModel
    name: str = "unet"

    def pairs_in_image(
        self,
        image: np.ndarray,
        grid: WindowGrid,
        *,
        rows: tuple[int, int] | None,
        pixel_size_nm: tuple[float, float],
        d_min_nm: float,
        workers: int = -1,
    ) -> list[tuple[SpotPair, ...]]:
        """Spot pairs of the windows in window rows ``rows``
        (:func:`hrtem_core.spots.detect_pairs_in_image`)."""
        return _pairs(
            image,
            grid,
            "unet",
            self.model,
            rows=rows,
            pixel_size_nm=pixel_size_nm,
            d_min_nm=d_min_nm,
            workers=workers,
        )

    def window_masks(
        self, spectra: np.ndarray, geometry: BandGeometry, *, pixel_size_nm: tuple[float, float]
    ) -> np.ndarray:
        """Detector masks, shape (n, S, S) bool, of window spectra of shape (n, w, w)."""
        from hrtem_core.unet.load import predict_masks
        from hrtem_core.windows import log_band

        return np.asarray(predict_masks(self.model, log_band(spectra, geometry)), dtype=bool)


@dataclass(frozen=True)
class ClassicalDetector:
    """The classical detector (no weights)."""

    name: str = "classical"

    def pairs_in_image(
        self,
        image: np.ndarray,
        grid: WindowGrid,
        *,
        rows: tuple[int, int] | None,
        pixel_size_nm: tuple[float, float],
        d_min_nm: float,
        workers: int = -1,
    ) -> list[tuple[SpotPair, ...]]:
        """Spot pairs of the windows in window rows ``rows``
        (:func:`hrtem_core.spots.detect_pairs_in_image`)."""
        return _pairs(
            image,
            grid,
            "classical",
            None,
            rows=rows,
            pixel_size_nm=pixel_size_nm,
            d_min_nm=d_min_nm,
            workers=workers,
        )

    def window_masks(
        self, spectra: np.ndarray, geometry: BandGeometry, *, pixel_size_nm: tuple[float, float]
    ) -> np.ndarray:
        """Detector masks, shape (n, S, S) bool, of window spectra of shape (n, w, w)."""
        # As spots.detect_pairs does: the classical detector on the cropped band.
        from hrtem_core.spots import classical_masks
        from hrtem_core.windows import crop_band

        mask = classical_masks(
            crop_band(spectra, geometry), geometry, pixel_size_nm=tuple(pixel_size_nm)
        )
        return np.asarray(mask[0] if isinstance(mask, tuple) else mask, dtype=bool)


def check_detector(name: Any) -> str:
    """``name`` when it is one of :data:`DETECTORS`, else :class:`AnalysisParameterError`."""
    if name not in DETECTORS:
        raise AnalysisParameterError(
            f"unknown spot detector {name!r}: choose one of {', '.join(DETECTORS)}"
        )
    return str(name)


def load_default_model() -> SpotModel:
    """The project's U-Net weights.

    Raises
    ------
    AnalysisParameterError
        They cannot be loaded (with a hint to use the classical detector).
    """
    from hrtem_core.unet.load import load_model

    try:
        return load_model()
    except HRTEMError:
        raise
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise AnalysisParameterError(
            f"cannot load the U-Net weights ({type(exc).__name__}: {exc}); "
            "train them or use the classical detector"
        ) from None


def detector_for(name: str, *, model: SpotModel | None = None) -> SpotDetector:
    """THE place a detector is chosen: ``"unet"`` (``model``, else the default weights) or
    ``"classical"``.

    Raises
    ------
    AnalysisParameterError
        An unknown name, or U-Net weights that cannot be loaded.
    """
    if check_detector(name) == "classical":
        return ClassicalDetector()
    return UNetDetector(model if model is not None else load_default_model())


__all__ = [
    "DETECTORS",
    "ClassicalDetector",
    "SpotDetector",
    "UNetDetector",
    "check_detector",
    "detector_for",
    "load_default_model",
]
