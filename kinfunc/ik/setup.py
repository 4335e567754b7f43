"""IK task description (OpenSim ``IKTaskSet`` equivalent), independent of any file format."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Optional

__all__ = ["CoordinateTask", "IKSetup"]


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
