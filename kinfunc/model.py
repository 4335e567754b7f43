"""Model pytree, static Topology and the builder.

A :class:`Model` is an immutable bundle of tensors (pytree leaves) plus a hashable
:class:`Topology` (pytree aux data). Changing a model means building a new one
(:meth:`Model.replace`, :func:`kinfunc.tree_map`); nothing mutates.

Joints follow OpenSim's CustomJoint. Joint ``j`` connects body ``j``'s parent to body ``j``
(one joint per body; bodies in topological order, root first). Its twelve frame parameters are
the location and body-fixed XYZ orientation of the joint frame in the parent body and in the
child body. Its motion has six *slots*: three rotations (applied successively, each about its
own axis) and three translations (along axes of the parent joint frame), each slot a function
of one coordinate (or a constant)::

    T_parent_child(q) = T(parent frame) @ M(q) @ T(child frame)^-1
    M(q) = [R(a1, f1) R(a2, f2) R(a3, f3) | a4 f4 + a5 f5 + a6 f6]

Scaling (OpenSim's ScaleTool semantics): body ``b``'s effective scale is
``global_scale * body_scales[b]`` (3 axes, in its own frame; ground's is 1). It multiplies the
offsets of markers on ``b``, the joint-frame locations on ``b`` (the child side of its own
joint, the parent side of its children's joints), and translation slot ``k`` of every joint
whose parent is ``b`` by ``|a_k| . s_parent / sum(|a_k|)`` (``a_k`` its axis: the weighted
mean of the parent's factors, component ``k`` for the canonical axes), except identity
translations ``Linear(1, 0)`` of a coordinate, which are DOFs (see :class:`Dof`,
:func:`kinfunc.fk.translation_scales`). Angles are never scaled.
"""
from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import Tensor

from . import functions as F
from ._pytree import register_static_dataclass, tree_map
from .tree import TreeSchedule, tree_schedule

__all__ = [
    "Motion",
    "Dof",
    "Joint",
    "CoordinateSpec",
    "Coupler",
    "FnGroup",
    "Topology",
    "Model",
    "ModelBuilder",
    "ModelError",
]

GROUND = "ground"


class ModelError(ValueError):
    """A model description is invalid; the message names the element and the fix."""


class Motion(enum.Enum):
    """What a coordinate moves: an angle (radians) or a length (metres); coupled = dependent."""

    ROTATIONAL = "rotational"
    TRANSLATIONAL = "translational"
    COUPLED = "coupled"


@dataclasses.dataclass(frozen=True)
class Dof:
    """One joint motion slot: about/along ``axis`` by ``function(coordinate)``.

    ``coordinate=None`` means a constant slot (``function`` must then be a ``Constant``).
    ``scaled`` (translations only): whether the parent body's scale multiplies this slot.
    ``None`` follows OpenSim's ScaleTool: every translation is scaled except an identity
    ``Linear(1, 0)`` of a coordinate (the coordinate *is* the length, a DOF).
    """

    axis: tuple[float, float, float]
    coordinate: Optional[str] = None
    function: F.FunctionSpec = F.Linear()
    scaled: Optional[bool] = None

    def __post_init__(self) -> None:
        axis = tuple(float(a) for a in self.axis)
        if len(axis) != 3 or not all(math.isfinite(a) for a in axis) or sum(a * a for a in axis) < 1e-24:
            raise ModelError(f"Dof axis {self.axis!r} must be 3 finite numbers, not all zero")
        object.__setattr__(self, "axis", axis)
        if self.coordinate is None and not isinstance(self.function, F.Constant):
            if isinstance(self.function, F.Linear) and self.function == F.Linear():
                object.__setattr__(self, "function", F.Constant(0.0))
            else:
                raise ModelError(f"Dof about {axis}: a {type(self.function).__name__} needs a coordinate")


_XYZ = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _vec3(v: Sequence[float], what: str) -> tuple[float, float, float]:
    t = tuple(float(x) for x in v)
    if len(t) != 3 or not all(math.isfinite(x) for x in t):
        raise ModelError(f"{what}: expected 3 finite numbers, got {v!r}")
    return t  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class Joint:
    """A joint spec: parent body, the twelve frame parameters, up to 3 rotations + 3 translations.

    Use the constructors :meth:`free`, :meth:`pin`, :meth:`slider`, :meth:`ball`,
    :meth:`universal`, :meth:`weld`, or give ``rotations``/``translations`` directly (custom).
    Locations in metres, orientations as body-fixed XYZ Euler angles in radians.
    """

    name: str
    parent: str = GROUND
    parent_location: tuple[float, float, float] = (0.0, 0.0, 0.0)
    parent_orientation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    child_location: tuple[float, float, float] = (0.0, 0.0, 0.0)
    child_orientation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotations: tuple[Dof, ...] = ()
    translations: tuple[Dof, ...] = ()

    def __post_init__(self) -> None:
        for f in ("parent_location", "parent_orientation", "child_location", "child_orientation"):
            object.__setattr__(self, f, _vec3(getattr(self, f), f"joint '{self.name}' {f}"))
        object.__setattr__(self, "rotations", tuple(self.rotations))
        object.__setattr__(self, "translations", tuple(self.translations))
        if len(self.rotations) > 3 or len(self.translations) > 3:
            raise ModelError(
                f"joint '{self.name}': at most 3 rotations and 3 translations "
                f"(got {len(self.rotations)} and {len(self.translations)})"
            )

    @staticmethod
    def _frames(kw: dict[str, Any]) -> dict[str, Any]:
        allowed = {"parent_location", "parent_orientation", "child_location", "child_orientation"}
        bad = set(kw) - allowed
        if bad:
            raise ModelError(f"unknown joint argument(s) {sorted(bad)}; allowed: {sorted(allowed)}")
        return kw

    @classmethod
    def free(cls, name: str, coordinates: Sequence[str], parent: str = GROUND, **frames: Any) -> "Joint":
        """6 DOF: rotations about Z, X, Y (OpenSim pelvis order: tilt, list, rotation), then
        translations along X, Y, Z. ``coordinates``: 6 names in that order."""
        if len(coordinates) != 6:
            raise ModelError(f"free joint '{name}' needs 6 coordinate names, got {len(coordinates)}")
        c = list(coordinates)
        rots = (Dof(_XYZ[2], c[0]), Dof(_XYZ[0], c[1]), Dof(_XYZ[1], c[2]))
        trans = tuple(Dof(_XYZ[k], c[3 + k]) for k in range(3))
        return cls(name, parent, rotations=rots, translations=trans, **cls._frames(frames))

    @classmethod
    def pin(cls, name: str, parent: str, coordinate: str, axis: Sequence[float] = (0, 0, 1), **frames: Any) -> "Joint":
        """1 rotational DOF about ``axis`` (joint frame)."""
        return cls(name, parent, rotations=(Dof(tuple(axis), coordinate),), **cls._frames(frames))

    @classmethod
    def slider(cls, name: str, parent: str, coordinate: str, axis: Sequence[float] = (1, 0, 0), **frames: Any) -> "Joint":
        """1 translational DOF along ``axis`` (joint frame)."""
        return cls(name, parent, translations=(Dof(tuple(axis), coordinate),), **cls._frames(frames))

    @classmethod
    def ball(
        cls, name: str, parent: str, coordinates: Sequence[str], axes: Sequence[Sequence[float]] = _XYZ, **frames: Any
    ) -> "Joint":
        """3 rotations about ``axes`` applied successively (body-fixed sequence)."""
        if len(coordinates) != 3 or len(axes) != 3:
            raise ModelError(f"ball joint '{name}' needs 3 coordinates and 3 axes")
        return cls(
            name, parent, rotations=tuple(Dof(tuple(a), c) for a, c in zip(axes, coordinates)), **cls._frames(frames)
        )

    @classmethod
    def universal(
        cls, name: str, parent: str, coordinates: Sequence[str], axes: Sequence[Sequence[float]] = _XYZ[:2], **frames: Any
    ) -> "Joint":
        """2 rotations about ``axes`` applied successively."""
        if len(coordinates) != 2 or len(axes) != 2:
            raise ModelError(f"universal joint '{name}' needs 2 coordinates and 2 axes")
        return cls(
            name, parent, rotations=tuple(Dof(tuple(a), c) for a, c in zip(axes, coordinates)), **cls._frames(frames)
        )

    @classmethod
    def weld(cls, name: str, parent: str, **frames: Any) -> "Joint":
        """0 DOF: the child is rigidly attached."""
        return cls(name, parent, **cls._frames(frames))


@dataclasses.dataclass(frozen=True)
class CoordinateSpec:
    """A generalised coordinate: default value, range ``(lo, hi)``, flags. Units SI (rad or m)."""

    name: str
    default: float = 0.0
    range: tuple[float, float] = (-math.inf, math.inf)
    locked: bool = False
    clamped: bool = False
    motion: Optional[Motion] = None


@dataclasses.dataclass(frozen=True)
class Coupler:
    """A dependent coordinate defined as ``function(independent)`` (OpenSim
    CoordinateCouplerConstraint); FK takes only independent coordinates."""

    dependent: str
    independent: str
    function: F.FunctionSpec


@dataclasses.dataclass(frozen=True)
class FnGroup:
    """A group of functions of one kind (see :func:`kinfunc.functions.group_key`).

    ``outputs``: flat slot indices (``joint * 6 + slot``) or dependent-coordinate indices it
    writes; ``inputs``: indices into the full coordinate vector ``[q, dependents]``.
    """

    key: tuple
    outputs: tuple[int, ...]
    inputs: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Topology:
    """Static, hashable structure of a model: names, tree, DOF wiring. No tensors."""

    name: str
    body_names: tuple[str, ...]
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]  # parent body index per body, -1 = ground; parents[b] < b
    coordinate_names: tuple[str, ...]  # independent coordinates (FK input order)
    coordinate_defaults: tuple[float, ...]
    coordinate_ranges: tuple[tuple[float, float], ...]
    coordinate_locked: tuple[bool, ...]
    coordinate_clamped: tuple[bool, ...]
    coordinate_motion: tuple[Motion, ...]
    dependent_names: tuple[str, ...]  # coupled coordinates, computed from independent ones
    coupler_groups: tuple[FnGroup, ...]  # outputs index dependent_names
    slot_groups: tuple[FnGroup, ...]  # outputs index flat joint slots (B * 6)
    marker_names: tuple[str, ...]
    marker_bodies: tuple[int, ...]
    marker_fixed: tuple[bool, ...]
    # flat translation slots (joint * 3 + k) the parent's scale does not multiply
    unscaled_slots: tuple[int, ...] = ()

    @property
    def n_bodies(self) -> int:
        return len(self.body_names)

    @property
    def n_coordinates(self) -> int:
        return len(self.coordinate_names)

    @property
    def n_markers(self) -> int:
        return len(self.marker_names)

    @property
    def schedule(self) -> "TreeSchedule":
        """The tree's static level schedule (:class:`kinfunc.tree.TreeSchedule`)."""
        return tree_schedule(self.parents)

    @property
    def levels(self) -> tuple[tuple[int, ...], ...]:
        """Bodies grouped by depth (level 0 = children of ground)."""
        return self.schedule.levels

    def motion_of(self, name: str) -> Optional[Motion]:
        """Motion type of an independent or coupled coordinate (``None`` if the model has no
        such coordinate). A coupled coordinate is rotational if it drives a rotation slot."""
        if name in self.coordinate_names:
            return self.coordinate_motion[self.coordinate_names.index(name)]
        if name not in self.dependent_names:
            return None
        d = len(self.coordinate_names) + self.dependent_names.index(name)
        for g in self.slot_groups:
            for out, inp in zip(g.outputs, g.inputs):
                if inp == d and g.key[0].value != "constant":
                    return Motion.ROTATIONAL if out % 6 < 3 else Motion.TRANSLATIONAL
        return Motion.ROTATIONAL

    def coordinate_index(self, name: str) -> int:
        try:
            return self.coordinate_names.index(name)
        except ValueError:
            raise KeyError(f"unknown coordinate '{name}'; known: {', '.join(self.coordinate_names)}") from None

    def body_index(self, name: str) -> int:
        try:
            return self.body_names.index(name)
        except ValueError:
            raise KeyError(f"unknown body '{name}'; known: {', '.join(self.body_names)}") from None

    def marker_index(self, name: str) -> int:
        try:
            return self.marker_names.index(name)
        except ValueError:
            raise KeyError(f"unknown marker '{name}'; known: {', '.join(self.marker_names)}") from None


@dataclasses.dataclass(frozen=True)
class Model:
    """An articulated model: tensor leaves + static :class:`Topology`.

    Leaves (``B`` bodies = joints, ``M`` markers):

    * ``parent_location (B, 3)``, ``parent_orientation (B, 3)``: joint frame in the parent body
      (metres; body-fixed XYZ Euler, radians); ground for the root.
    * ``child_location (B, 3)``, ``child_orientation (B, 3)``: joint frame in the child body.
    * ``axes (B, 6, 3)``: rotation (0-2) and translation (3-5) axes in the joint frame (any
      length; normalised when used).
    * ``slot_params``: per slot group, a tuple of function-parameter tensors.
    * ``coupler_params``: per coupler group, a tuple of function-parameter tensors.
    * ``marker_offsets (M, 3)``: marker positions in their body's frame (unscaled, metres).
    * ``body_scales (B, 3)``: per-body, per-axis scale factors.
    * ``global_scale ()``: multiplies every body's scale.
    """

    parent_location: Tensor
    parent_orientation: Tensor
    child_location: Tensor
    child_orientation: Tensor
    axes: Tensor
    slot_params: tuple[tuple[Tensor, ...], ...]
    coupler_params: tuple[tuple[Tensor, ...], ...]
    marker_offsets: Tensor
    body_scales: Tensor
    global_scale: Tensor
    topology: Topology

    # --- convenience views of the topology -------------------------------------------
    @property
    def coordinate_names(self) -> tuple[str, ...]:
        return self.topology.coordinate_names

    @property
    def body_names(self) -> tuple[str, ...]:
        return self.topology.body_names

    @property
    def marker_names(self) -> tuple[str, ...]:
        return self.topology.marker_names

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.topology.joint_names

    @property
    def dtype(self) -> torch.dtype:
        return self.marker_offsets.dtype

    @property
    def device(self) -> torch.device:
        return self.marker_offsets.device

    def default_q(self) -> Tensor:
        """Default coordinate values ``(C,)`` (rad / m) in the model's dtype and device."""
        return torch.tensor(self.topology.coordinate_defaults, dtype=self.dtype, device=self.device)

    def coordinate_limits(self) -> tuple[Tensor, Tensor]:
        """Lower and upper coordinate limits, each ``(C,)`` (``inf`` where unbounded)."""
        lo, hi = zip(*self.topology.coordinate_ranges) if self.topology.coordinate_ranges else ((), ())
        kw = dict(dtype=self.dtype, device=self.device)
        return torch.tensor(lo, **kw), torch.tensor(hi, **kw)

    def joint_leaves(self) -> tuple[Tensor, ...]:
        """Every leaf except the marker offsets: what the joints' kinematics depend on (joint
        frames, axes, function and coupler parameters, scales)."""
        return (
            self.parent_location,
            self.parent_orientation,
            self.child_location,
            self.child_orientation,
            self.axes,
            self.body_scales,
            self.global_scale,
            *(t for grp in self.slot_params + self.coupler_params for t in grp),
        )

    def replace(self, **changes: Any) -> "Model":
        """A new model with some leaves replaced (shapes must match)."""
        return dataclasses.replace(self, **changes)

    def to(self, device: Any = None, dtype: Optional[torch.dtype] = None) -> "Model":
        """A copy on ``device`` / in floating ``dtype`` (the original is untouched); the model
        itself when every leaf is already there (models are immutable)."""
        dev = None if device is None else torch.device(device)
        leaves = (*self.joint_leaves(), self.marker_offsets)
        if all((dtype is None or t.dtype == dtype) and (dev is None or t.device == dev) for t in leaves):
            return self
        return tree_map(lambda x: x.to(device=device, dtype=dtype), self)

    def with_markers(self, names: Sequence[str]) -> "Model":
        """A model keeping only the markers ``names`` (in that order)."""
        idx = [self.topology.marker_index(n) for n in names]
        topo = dataclasses.replace(
            self.topology,
            marker_names=tuple(names),
            marker_bodies=tuple(self.topology.marker_bodies[i] for i in idx),
            marker_fixed=tuple(self.topology.marker_fixed[i] for i in idx),
        )
        return dataclasses.replace(self, marker_offsets=self.marker_offsets[idx], topology=topo)

    def __repr__(self) -> str:
        t = self.topology
        return (
            f"Model('{t.name}', bodies={t.n_bodies}, coordinates={t.n_coordinates}, "
            f"markers={t.n_markers}, dtype={self.dtype}, device={self.device})"
        )


register_static_dataclass(Model, ("topology",))


class ModelBuilder:
    """Assemble a model from bodies, joints, coordinates and markers, then :meth:`build`.

    Example::

        mb = ModelBuilder("arm")
        mb.add_body("upper", Joint.ball("shoulder", "ground", ("sh_x", "sh_y", "sh_z")))
        mb.add_body("lower", Joint.pin("elbow", "upper", "elbow_flex", parent_location=(0, -0.3, 0)))
        mb.add_marker("wrist", "lower", (0, -0.25, 0))
        model = mb.build()

    Validation happens here (unknown parents, cycles, duplicate names, bad axes, defaults
    outside ranges), with errors that name the element.
    """

    def __init__(self, name: str = "model") -> None:
        self.name = name
        self._bodies: list[tuple[str, Joint]] = []
        self._coords: dict[str, CoordinateSpec] = {}
        self._couplers: list[Coupler] = []
        self._markers: list[tuple[str, str, tuple[float, float, float], bool]] = []

    def add_body(self, name: str, joint: Joint) -> "ModelBuilder":
        """Add body ``name`` attached to ``joint.parent`` by ``joint``."""
        if name == GROUND:
            raise ModelError(f"'{GROUND}' is reserved for the fixed world frame; rename the body")
        if any(n == name for n, _ in self._bodies):
            raise ModelError(f"duplicate body name '{name}'")
        if any(j.name == joint.name for _, j in self._bodies):
            raise ModelError(f"duplicate joint name '{joint.name}' (body '{name}')")
        self._bodies.append((name, joint))
        return self

    def add_coordinate(
        self,
        name: str,
        default: float = 0.0,
        range: Optional[Sequence[float]] = None,
        locked: bool = False,
        clamped: bool = False,
        motion: Optional[Motion] = None,
    ) -> "ModelBuilder":
        """Declare a coordinate's default, range, flags (optional: DOFs create coordinates)."""
        if name in self._coords:
            raise ModelError(f"duplicate coordinate '{name}'")
        rng = (-math.inf, math.inf) if range is None else (float(range[0]), float(range[1]))
        if not rng[0] <= rng[1]:
            raise ModelError(f"coordinate '{name}': range {rng} has lower > upper")
        self._coords[name] = CoordinateSpec(name, float(default), rng, bool(locked), bool(clamped), motion)
        return self

    def add_coupler(self, dependent: str, independent: str, function: F.FunctionSpec) -> "ModelBuilder":
        """Make coordinate ``dependent`` equal ``function(independent)``."""
        self._couplers.append(Coupler(dependent, independent, function))
        return self

    def add_marker(self, name: str, body: str, offset: Sequence[float], fixed: bool = False) -> "ModelBuilder":
        """Marker ``name`` at ``offset`` (metres, body frame) on ``body``."""
        if any(m[0] == name for m in self._markers):
            raise ModelError(f"duplicate marker name '{name}'")
        self._markers.append((name, body, _vec3(offset, f"marker '{name}' offset"), bool(fixed)))
        return self

    # ------------------------------------------------------------------------------
    def _order_bodies(self) -> list[tuple[str, Joint]]:
        names = {n for n, _ in self._bodies}
        for n, j in self._bodies:
            if j.parent != GROUND and j.parent not in names:
                raise ModelError(
                    f"joint '{j.name}' of body '{n}' names unknown parent '{j.parent}'; "
                    f"known bodies: {', '.join(sorted(names)) or '(none)'} or '{GROUND}'"
                )
        placed: dict[str, int] = {}
        order: list[tuple[str, Joint]] = []
        remaining = list(self._bodies)
        while remaining:
            progressed = False
            rest = []
            for n, j in remaining:
                if j.parent == GROUND or j.parent in placed:
                    placed[n] = len(order)
                    order.append((n, j))
                    progressed = True
                else:
                    rest.append((n, j))
            if not progressed:
                cyc = ", ".join(f"{n}<-{j.parent}" for n, j in rest)
                raise ModelError(f"the joint tree has a cycle among bodies: {cyc}")
            remaining = rest
        # stable topological order: keep insertion order where possible (parents first)
        return order

    def build(self, dtype: torch.dtype = torch.float32, device: Any = None) -> Model:
        """Validate and assemble an immutable :class:`Model` (default float32 on CPU)."""
        if not self._bodies:
            raise ModelError("model has no bodies; add_body() at least one")
        bodies = self._order_bodies()
        body_index = {n: i for i, (n, _) in enumerate(bodies)}
        parents = tuple(-1 if j.parent == GROUND else body_index[j.parent] for _, j in bodies)
        B = len(bodies)

        # coordinates: declared ones first-use order, merged with DOF usage
        coord_specs: dict[str, CoordinateSpec] = {}
        usage: dict[str, Motion] = {}
        dependents = {c.dependent for c in self._couplers}
        for _, j in bodies:
            for kind, dofs in ((Motion.ROTATIONAL, j.rotations), (Motion.TRANSLATIONAL, j.translations)):
                for d in dofs:
                    if d.coordinate is not None:
                        # a coordinate that turns any joint is an angle, even where a function of it
                        # also drives a translation first (a shoulder girdle sliding with arm_flex)
                        if kind is Motion.ROTATIONAL:
                            usage[d.coordinate] = kind
                        else:
                            usage.setdefault(d.coordinate, kind)
                        if d.coordinate not in dependents and d.coordinate not in coord_specs:
                            coord_specs[d.coordinate] = self._coords.get(d.coordinate, CoordinateSpec(d.coordinate))
        for c in self._couplers:
            if c.dependent == c.independent:
                raise ModelError(f"coupler '{c.dependent}' depends on itself")
            if c.independent in dependents:
                raise ModelError(
                    f"coupler '{c.dependent}' depends on '{c.independent}', itself coupled; chains are not supported"
                )
            if c.independent not in coord_specs:
                coord_specs[c.independent] = self._coords.get(c.independent, CoordinateSpec(c.independent))
        for name, spec in self._coords.items():  # declared but unused coordinates are kept
            if name not in coord_specs and name not in dependents:
                coord_specs[name] = spec
        coord_names = tuple(coord_specs)
        for name, spec in coord_specs.items():
            lo, hi = spec.range
            if not lo <= spec.default <= hi:
                raise ModelError(f"coordinate '{name}': default {spec.default} lies outside its range {spec.range}")
        dep_names = tuple(dict.fromkeys(c.dependent for c in self._couplers))
        if len(dep_names) != len(self._couplers):
            raise ModelError("a coordinate is made dependent by more than one coupler")
        full_index = {n: i for i, n in enumerate(coord_names + dep_names)}

        # joint slots -> function groups
        axes = torch.zeros(B, 6, 3, dtype=torch.float64)
        unscaled: list[int] = []
        for b, (_, j) in enumerate(bodies):
            for k, d in enumerate(j.translations):
                sc = d.scaled
                if sc is None:
                    sc = not (d.coordinate is not None and isinstance(d.function, F.Linear) and d.function == F.Linear())
                if not sc:
                    unscaled.append(b * 3 + k)
        slot_fns: dict[tuple, list[tuple[int, int, F.FunctionSpec]]] = {}
        for b, (bname, j) in enumerate(bodies):
            rot = list(j.rotations) + [Dof(_XYZ[k]) for k in range(len(j.rotations), 3)]
            tra = list(j.translations) + [Dof(_XYZ[k]) for k in range(len(j.translations), 3)]
            for s, d in enumerate(rot + tra):
                axes[b, s] = torch.tensor(d.axis, dtype=torch.float64)
                if d.coordinate is None:
                    if d.function == F.Constant(0.0):
                        continue  # structurally zero: no group entry
                    inp = 0
                else:
                    if d.coordinate not in full_index:
                        raise ModelError(f"joint '{j.name}': unknown coordinate '{d.coordinate}'")
                    inp = full_index[d.coordinate]
                slot_fns.setdefault(F.group_key(d.function), []).append((b * 6 + s, inp, d.function))
        slot_groups = tuple(FnGroup(k, tuple(o for o, _, _ in v), tuple(i for _, i, _ in v)) for k, v in slot_fns.items())
        slot_params = tuple(F.group_params(k, [f for _, _, f in v], torch.float64) for k, v in slot_fns.items())

        cpl_fns: dict[tuple, list[tuple[int, int, F.FunctionSpec]]] = {}
        for c in self._couplers:
            cpl_fns.setdefault(F.group_key(c.function), []).append(
                (dep_names.index(c.dependent), full_index[c.independent], c.function)
            )
        coupler_groups = tuple(FnGroup(k, tuple(o for o, _, _ in v), tuple(i for _, i, _ in v)) for k, v in cpl_fns.items())
        coupler_params = tuple(F.group_params(k, [f for _, _, f in v], torch.float64) for k, v in cpl_fns.items())

        marker_bodies = []
        for mname, body, _, _ in self._markers:
            if body not in body_index:
                raise ModelError(f"marker '{mname}' is on unknown body '{body}'; known: {', '.join(body_index)}")
            marker_bodies.append(body_index[body])

        motions = []
        for name in coord_names:
            spec = coord_specs[name]
            motions.append(spec.motion or usage.get(name, Motion.ROTATIONAL))

        topo = Topology(
            name=self.name,
            body_names=tuple(n for n, _ in bodies),
            joint_names=tuple(j.name for _, j in bodies),
            parents=parents,
            coordinate_names=coord_names,
            coordinate_defaults=tuple(coord_specs[n].default for n in coord_names),
            coordinate_ranges=tuple(coord_specs[n].range for n in coord_names),
            coordinate_locked=tuple(coord_specs[n].locked for n in coord_names),
            coordinate_clamped=tuple(coord_specs[n].clamped for n in coord_names),
            coordinate_motion=tuple(motions),
            dependent_names=dep_names,
            coupler_groups=coupler_groups,
            slot_groups=slot_groups,
            marker_names=tuple(m[0] for m in self._markers),
            marker_bodies=tuple(marker_bodies),
            marker_fixed=tuple(m[3] for m in self._markers),
            unscaled_slots=tuple(unscaled),
        )
        f64 = lambda rows: torch.tensor(rows, dtype=torch.float64).reshape(-1, 3)  # noqa: E731
        model = Model(
            parent_location=f64([j.parent_location for _, j in bodies]),
            parent_orientation=f64([j.parent_orientation for _, j in bodies]),
            child_location=f64([j.child_location for _, j in bodies]),
            child_orientation=f64([j.child_orientation for _, j in bodies]),
            axes=axes,
            slot_params=slot_params,
            coupler_params=coupler_params,
            marker_offsets=f64([m[2] for m in self._markers]),
            body_scales=torch.ones(B, 3, dtype=torch.float64),
            global_scale=torch.tensor(1.0, dtype=torch.float64),
            topology=topo,
        )
        return model.to(device=device, dtype=dtype)
