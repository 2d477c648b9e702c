"""hrtem_core: analysis of HRTEM images of crystalline nanoparticles.

A library of pure functions over numpy arrays and small frozen dataclasses (it never imports
streamlit). The method follows Zhu et al., "Deep learning-assisted analysis of HRTEM images of
crystalline nanoparticles": a moving window, each window's FFT, a U-Net that binarizes the cropped
FFT, centrosymmetric spot pairs -> lattice spacings and interplanar angles -> phases and (hkl)
planes matched against standard PDF cards.

Units: lengths in nm, spatial frequencies in 1/nm, angles in degrees; Angstrom only where a card
shows it. Defocus sign convention: negative = underfocus (Scherzer defocus is negative for Cs > 0).
"""

from hrtem_core.errors import (
    AnalysisParameterError,
    CalibrationError,
    CardDatabaseError,
    HRTEMError,
    ReadError,
)

__version__ = "0.1.0"

__all__ = [
    "AnalysisParameterError",
    "CalibrationError",
    "CardDatabaseError",
    "HRTEMError",
    "ReadError",
    "__version__",
]
