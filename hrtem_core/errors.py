"""One small exception hierarchy, raised at the boundaries of the library.

Every message is one line that a microscopist understands: it names the file, sheet, row, column
or parameter at fault and says what was expected. The CLI prints ``error: <message>`` on stderr and
exits with code 2; the dashboard shows the message with ``st.error``.
"""

from __future__ import annotations


class HRTEMError(Exception):
    """Base class of every error the library raises on purpose."""

    def __init__(self, message: str) -> None:
        # Keep messages on one line: a traceback-free CLI and a tidy st.error depend on it.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        """The one-line message."""
        return str(self)


class ReadError(HRTEMError):
    """A file could not be read as an image (unknown format, corrupt, not 2-D, complex, ...)."""


class CalibrationError(HRTEMError):
    """The pixel size is missing, not a real-space length, or not a positive finite number."""


class CardDatabaseError(HRTEMError):
    """The PDF card database is invalid (names the sheet, row and column) or cannot be saved."""


class AnalysisParameterError(HRTEMError):
    """An analysis parameter is invalid (window, stride, tolerances, phases, image too small)."""


__all__ = [
    "AnalysisParameterError",
    "CalibrationError",
    "CardDatabaseError",
    "HRTEMError",
    "ReadError",
]
