"""Helpers shared by the marker-data readers (TRC, C3D): units, label clean-up, warnings."""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Optional, Union

from ..trial import DataFileError, DataFileWarning

PathLike = Union[str, "os.PathLike[str]"]

# length unit (as spelled in files, lower case) -> (canonical name, metres per unit)
_UNITS = {
    "mm": ("mm", 1e-3),
    "millimeter": ("mm", 1e-3),
    "millimeters": ("mm", 1e-3),
    "millimetre": ("mm", 1e-3),
    "millimetres": ("mm", 1e-3),
    "cm": ("cm", 1e-2),
    "centimeter": ("cm", 1e-2),
    "centimeters": ("cm", 1e-2),
    "m": ("m", 1.0),
    "meter": ("m", 1.0),
    "meters": ("m", 1.0),
    "metre": ("m", 1.0),
    "metres": ("m", 1.0),
}

UNIT_SCALE = {"mm": 1e-3, "cm": 1e-2, "m": 1.0}


def parse_units(text: Optional[str]) -> Optional[tuple[str, float]]:
    """``"MM "`` -> ``("mm", 1e-3)``; ``None`` when the spelling is not a known length unit."""
    if text is None:
        return None
    key = text.strip().strip("\x00").lower()
    return _UNITS.get(key)


def unit_scale(units: str) -> float:
    """Metres per ``units`` (``"mm"``, ``"cm"``, ``"m"``); raises ``ValueError`` otherwise."""
    parsed = parse_units(units)
    if parsed is None:
        raise ValueError(f"unknown length unit {units!r}; use 'mm', 'cm' or 'm'")
    return parsed[1]


class Report:
    """Collects warnings for one file: each is issued as :class:`DataFileWarning` and kept
    for ``trial.meta["warnings"]``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.messages: list[str] = []

    def warn(self, msg: str) -> None:
        text = f"{self.path}: {msg}"
        self.messages.append(text)
        warnings.warn(text, DataFileWarning, stacklevel=3)

    def error(self, msg: str) -> DataFileError:
        return DataFileError(f"{self.path}: {msg}")


def unique_labels(labels: Sequence[str], report: Report, what: str = "marker") -> tuple[list[str], dict]:
    """Make labels non-empty and unique: empty -> ``"unnamed_<k>"`` (k = 1-based column),
    repeats -> ``"<label>_2"``, ``"<label>_3"``... Returns ``(labels, renamed)`` with
    ``renamed[new] = original`` for every change, and reports the changes."""
    out: list[str] = []
    renamed: dict[str, str] = {}
    seen: set[str] = set()
    taken = set(labels)
    empties, dups = [], []
    for k, lab in enumerate(labels):
        new = lab
        if not new:
            new = f"unnamed_{k + 1}"
            while new in taken or new in seen:
                new += "_"
            empties.append(k + 1)
        elif new in seen:
            j = 2
            while f"{lab}_{j}" in seen or f"{lab}_{j}" in taken:
                j += 1
            new = f"{lab}_{j}"
            dups.append(f"{lab!r} -> {new!r}")
        if new != lab:
            renamed[new] = lab
        seen.add(new)
        out.append(new)
    if empties:
        report.warn(f"{len(empties)} {what}(s) without a label (columns {empties}) named 'unnamed_<column>'")
    if dups:
        report.warn(f"duplicate {what} labels made unique: {', '.join(dups)}")
    return out, renamed
