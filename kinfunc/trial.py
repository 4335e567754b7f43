"""Measured marker trajectories (:class:`MarkerTrial`), shared by all loaders."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["DataFileError", "DataFileWarning", "MarkerTrial"]


class DataFileError(ValueError):
    """A marker data file (TRC, C3D) cannot be read: the message names the file, where in it
    (line, byte offset, parameter), the cause and the fix."""


class DataFileWarning(UserWarning):
    """Something in a data file was repaired or interpreted (reported, never silent); the same
    text is kept in ``trial.meta["warnings"]``."""


@dataclasses.dataclass(frozen=True)
class MarkerTrial:
    """Marker trajectories of one trial, in metres, NaN where a marker is missing.

    * ``names``: marker labels ``(M,)``.
    * ``xyz``: ``(T, M, 3)`` float64 positions in metres, lab frame (see :meth:`reoriented`).
    * ``rate``: sampling rate in Hz.
    * ``time``: ``(T,)`` seconds.
    * ``units``: the length unit as read from the file (``"mm"``, ``"m"``, ``"cm"``).
    * ``source``: the file it came from, if any; ``meta``: anything else the loader reports.
    """

    names: tuple[str, ...]
    xyz: Tensor
    rate: float
    time: Tensor
    units: str = "m"
    source: Optional[str] = None
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        T = self.xyz.shape[0]
        if self.xyz.ndim != 3 or self.xyz.shape[1:] != (len(self.names), 3):
            raise ValueError(
                f"MarkerTrial: xyz shape {tuple(self.xyz.shape)} does not match (T, {len(self.names)}, 3)"
            )
        if self.time.shape != (T,):
            raise ValueError(f"MarkerTrial: time shape {tuple(self.time.shape)} != ({T},)")

    @property
    def n_frames(self) -> int:
        return self.xyz.shape[0]

    @property
    def n_markers(self) -> int:
        return len(self.names)

    def select(self, names: Sequence[str]) -> "MarkerTrial":
        """Keep markers ``names`` (in that order); unknown names raise ``KeyError`` listing them."""
        missing = [n for n in names if n not in self.names]
        if missing:
            raise KeyError(f"{self.source or 'trial'}: no marker(s) {missing}; available: {', '.join(self.names)}")
        idx = [self.names.index(n) for n in names]
        return dataclasses.replace(self, names=tuple(names), xyz=self.xyz[:, idx])

    def slice(self, t0: Optional[float] = None, t1: Optional[float] = None) -> "MarkerTrial":
        """Frames with ``t0 <= time <= t1`` (seconds; ``None`` = open end)."""
        keep = torch.ones_like(self.time, dtype=torch.bool)
        eps = 1e-9
        if t0 is not None:
            keep &= self.time >= t0 - eps
        if t1 is not None:
            keep &= self.time <= t1 + eps
        return dataclasses.replace(self, xyz=self.xyz[keep], time=self.time[keep])

    def __repr__(self) -> str:
        return (
            f"MarkerTrial({self.n_frames} frames x {self.n_markers} markers @ {self.rate:g} Hz, "
            f"source={self.source!r})"
        )
