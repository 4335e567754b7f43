"""IK task description (OpenSim ``IKTaskSet`` equivalent), independent of any file format."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
from torch import Tensor

from ..trial import linear_brackets

__all__ = ["CoordinateTable", "CoordinateTask", "IKError", "IKSetup", "coordinate_targets"]


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
class CoordinateTable:
    """Targets of ``from_file`` coordinate tasks over time, as a file holds them.

    ``names (N,)`` column labels; ``time (T,)`` seconds, float64; ``values (T, N)`` float64 in
    the file's units; ``in_degrees``: rotational columns are in degrees (translations are in
    metres either way; which columns are rotational comes from the model at solve time);
    ``source``: where the table came from (named in messages).
    :func:`kinfunc.io.read_coordinate_table` reads one from a .mot/.sto;
    :func:`kinfunc.io.load_ik_setup` does so for the setup's ``coordinate_file``."""

    names: tuple[str, ...]
    time: Tensor
    values: Tensor
    in_degrees: bool = False
    source: str = "coordinate table"


@dataclasses.dataclass(frozen=True)
class IKSetup:
    """Weights and tasks for an IK solve.

    * ``marker_weights``: marker name -> weight. When not ``None``, only these markers are
      used (OpenSim semantics: markers without an applied task are ignored); ``None`` = every
      marker present in both model and trial, weight 1.
    * ``coordinate_tasks``: coordinate name -> :class:`CoordinateTask`.
    * ``time_range``: ``(t0, t1)`` seconds, inclusive; ``None`` = whole trial.
    * ``model_file``, ``marker_file``, ``output_motion_file``: paths named by a setup file.
    * ``coordinate_file``: the file the setup names for ``from_file`` coordinate tasks (or ``None``);
      ``coordinate_table``: its contents (:class:`CoordinateTable`), which the tasks read.
    * ``accuracy``, ``constraint_weight``: the OpenSim solver settings, as read (informative).
    """

    marker_weights: Optional[Mapping[str, float]] = None
    coordinate_tasks: Mapping[str, CoordinateTask] = dataclasses.field(default_factory=dict)
    time_range: Optional[tuple[float, float]] = None
    model_file: Optional[str] = None
    marker_file: Optional[str] = None
    output_motion_file: Optional[str] = None
    coordinate_file: Optional[str] = None
    coordinate_table: Optional[CoordinateTable] = None
    accuracy: Optional[float] = None
    constraint_weight: Optional[float] = None


def coordinate_targets(setup: IKSetup, names: Sequence[str], time: Tensor, model: Any) -> Tensor:
    """Targets ``(T, K)`` of the ``from_file`` coordinate tasks ``names`` (``K``) at the trial
    times ``time (T,)`` (s), in the model's dtype and device: their columns in
    ``setup.coordinate_table`` (degrees converted for the model's rotational coordinates),
    interpolated linearly in time. OpenSim fits a quintic GCV smoothing spline to the file
    instead; at the file's own sample times both give its values up to that spline's smoothing.

    Raises :class:`IKError` when the setup has no table, the table lacks a column, its times do
    not increase, a value is not finite, or the trial's times are outside the table's (by more
    than 1 microsecond).
    """
    names = list(names)
    kw = dict(dtype=model.dtype, device=model.device)
    if not names:
        return torch.zeros(time.shape[0], 0, **kw)
    data = setup.coordinate_table
    if data is None:
        where = (f" ({setup.coordinate_file} is named but not read: it did not exist when the setup was loaded)"
                 if setup.coordinate_file else "")
        raise IKError(
            f"coordinate task(s) {names}: value_type from_file needs a coordinate table{where}; load the setup "
            "with kf.io.load_ik_setup, or pass IKSetup(coordinate_table=kf.io.read_coordinate_table(path)), "
            "or give constant values"
        )
    src = data.source
    missing = [n for n in names if n not in data.names]
    if missing:
        raise IKError(f"{src}: no column for from_file coordinate task(s) {missing}; columns: {', '.join(data.names)}")
    ft = data.time.to(torch.float64)
    v = data.values[:, [data.names.index(n) for n in names]].to(torch.float64)
    if data.in_degrees:
        rot = torch.tensor([str(getattr(model.topology.motion_of(n), "value", "")) == "rotational" for n in names])
        v = torch.where(rot, v * (math.pi / 180.0), v)
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
