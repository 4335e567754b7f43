"""IK task description (OpenSim ``IKTaskSet`` equivalent), independent of any file format."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
from torch import Tensor

from ..trial import linear_brackets

__all__ = ["CoordinateTask", "IKError", "IKSetup", "coordinate_targets"]


class IKError(ValueError):
    """An IK request cannot be solved as given; the message names the item and the fix."""


@dataclasses.dataclass(frozen=True)
class CoordinateTask:
    """Hold a coordinate near ``value`` (rad or m; ``None`` = the model's default) with ``weight``.

    ``from_file=True`` (OpenSim ``value_type`` ``from_file``): the target varies over time and
    comes from the column of this coordinate in :attr:`IKSetup.coordinate_file`; ``value`` is
    then ``None`` and does *not* mean the default.
    """

    weight: float
    value: Optional[float] = None
    from_file: bool = False


@dataclasses.dataclass(frozen=True)
class IKSetup:
    """Weights and tasks for an IK solve.

    * ``marker_weights``: marker name -> weight. When not ``None``, only these markers are
      used (OpenSim semantics: markers without an applied task are ignored); ``None`` = every
      marker present in both model and trial, weight 1.
    * ``coordinate_tasks``: coordinate name -> :class:`CoordinateTask`.
    * ``time_range``: ``(t0, t1)`` seconds, inclusive; ``None`` = whole trial.
    * ``model_file``, ``marker_file``, ``output_motion_file``: paths named by a setup file.
    * ``coordinate_file``: the coordinate table ``from_file`` coordinate tasks read (or ``None``).
    * ``accuracy``, ``constraint_weight``: the OpenSim solver settings, as read (informative).
    """

    marker_weights: Optional[Mapping[str, float]] = None
    coordinate_tasks: Mapping[str, CoordinateTask] = dataclasses.field(default_factory=dict)
    time_range: Optional[tuple[float, float]] = None
    model_file: Optional[str] = None
    marker_file: Optional[str] = None
    output_motion_file: Optional[str] = None
    coordinate_file: Optional[str] = None
    accuracy: Optional[float] = None
    constraint_weight: Optional[float] = None


def coordinate_targets(setup: IKSetup, names: Sequence[str], time: Tensor, model: Any) -> Tensor:
    """Targets ``(T, K)`` of the ``from_file`` coordinate tasks ``names`` (``K``) at the trial
    times ``time (T,)`` (s), in the model's dtype and device: their columns in
    ``setup.coordinate_file`` (a .mot/.sto; degrees converted as :func:`kinfunc.io.read_mot`
    does, by the file's ``inDegrees`` and the model's coordinate types), interpolated linearly
    in time. OpenSim fits a quintic GCV smoothing spline to the file instead; at the file's own
    sample times both give its values up to that spline's smoothing.

    Raises :class:`IKError` when the setup names no file, the file lacks a column, its times do
    not increase, a value is not finite, or the trial's times are outside the file's (by more
    than 1 microsecond).
    """
    names = list(names)
    kw = dict(dtype=model.dtype, device=model.device)
    if not names:
        return torch.zeros(time.shape[0], 0, **kw)
    if setup.coordinate_file is None:
        raise IKError(
            f"coordinate task(s) {names}: value_type from_file needs a coordinate file; set "
            "IKSetup.coordinate_file (a .mot/.sto with these columns) or give constant values"
        )
    from ..io.mot import read_mot  # (kinfunc.io reads setups into this module's classes)

    src = setup.coordinate_file
    data = read_mot(src, model=model)
    missing = [n for n in names if n not in data.names]
    if missing:
        raise IKError(f"{src}: no column for from_file coordinate task(s) {missing}; columns: {', '.join(data.names)}")
    ft = data.time.to(torch.float64)
    v = data.values[:, [data.names.index(n) for n in names]].to(torch.float64)
    if ft.numel() > 1 and not bool((ft[1:] > ft[:-1]).all()):
        raise IKError(f"{src}: times must increase from row to row for from_file coordinate tasks")
    bad = [n for k, n in enumerate(names) if not bool(torch.isfinite(v[:, k]).all())]
    if bad:
        raise IKError(f"{src}: column(s) {bad} have missing or non-finite values; fill them to use them as from_file targets")
    t = time.to(torch.float64)
    if t.numel() and (float(t.min()) < float(ft[0]) - 1e-6 or float(t.max()) > float(ft[-1]) + 1e-6):
        raise IKError(
            f"{src}: covers {float(ft[0]):.6g}-{float(ft[-1]):.6g} s but the trial's frames run "
            f"{float(t.min()):.6g}-{float(t.max()):.6g} s; give a file covering the trial or set the "
            "setup's time_range within the file's"
        )
    if ft.numel() == 1:
        return v.expand(t.shape[0], -1).to(**kw)
    i0, i1, a = linear_brackets(ft, t)
    return (v[i0] + a[:, None] * (v[i1] - v[i0])).to(**kw)
