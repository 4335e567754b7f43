"""Analytic (geometric) Jacobians of marker positions, from the FK outputs.

For a marker ``p`` on a body below joint ``j``: a rotation slot of ``j`` turning about the
world axis ``w`` moves it by ``w x (p - c_j)`` per radian (``c_j`` the world origin of the
joint's child-side frame, about which the joint rotates); a translation slot moves it along
its world axis times its translation scale (:func:`kinfunc.fk.translation_scales`). Slot values
depend on coordinates through the joint functions and couplers, whose derivatives are in
closed form (:func:`kinfunc.functions.derivative`). A marker offset moves its marker by
``R_b diag(s_b)``.

Everything is batched over frames; the reference is ``torch.func.jacrev``/``jacfwd`` of
:func:`kinfunc.marker_positions` (tests check they agree in float64).

:class:`JacobianPlan` does this for many frames with everything that does not depend on ``q``
worked out once. Its forward pass is :func:`kinfunc.kinematics.forward` (the pass compiled FK's
leaves form runs too: frames-last storage ``(bodies, 3, 3, T)``, bodies by tree level); on top
of it, one GEMM per kind of joint slot for the sums over ancestors, closed-form derivatives
w.r.t. body scale factors, and Gauss-Newton normal equations from the moments of the markers
below each joint entry (:meth:`JacobianPlan.normal_equations`) that never form the per-marker
Jacobian.
"""

from __future__ import annotations

import array
import dataclasses
import functools
from typing import Any, NamedTuple, Optional, Sequence

import torch
from torch import Tensor
from torch.func import jacfwd, vmap

from .. import functions as F
from ..fk import full_coordinates, slot_values, translation_weights
from ..kinematics import JointConstants, JointFrames, KinematicPlan, plan_tables, forward, joint_parts, marker_rows
from ..model import Model

__all__ = ["JacobianPlan", "FrameKinematics", "ModelKinematics", "marker_jacobian", "slot_derivatives"]


def _group_derivatives(groups, params, full: Tensor, dfull: Tensor, n_out: int) -> Tensor:
    """``d out/dq (T, n_out, C)`` of function groups reading ``full (T, N)`` whose ``d/dq`` is
    ``dfull (T, N, C)``; outputs no group writes are 0."""
    T, C = full.shape[0], dfull.shape[-1]
    rows = full.new_zeros(T, n_out + 1, C)
    parts, where = [], []
    for g, p in zip(groups, params):
        if g.key[0].name == "CONSTANT":
            continue
        inp = list(g.inputs)
        d = F.derivative(g.key, p, full[:, inp])  # (T, n)
        parts.append(d[..., None] * dfull[:, inp])
        where.extend(g.outputs)
    if not parts:
        return rows[:, :n_out]
    rows = rows.index_copy(1, torch.tensor(where, device=full.device), torch.cat(parts, 1))
    return rows[:, :n_out]


def slot_derivatives(model: Model, q: Tensor) -> Tensor:
    """``dv/dq (T, B, 6, C)``: derivatives of joint slot values w.r.t. coordinates ``q (T, C)``,
    chain rule through couplers and joint functions in closed form (:func:`kinfunc.functions.derivative`)."""
    topo = model.topology
    full = full_coordinates(model, q)
    dfull = full_coordinate_derivatives(model, q)
    dv = _group_derivatives(topo.slot_groups, model.slot_params, full, dfull, topo.n_bodies * 6)
    return dv.reshape(q.shape[0], topo.n_bodies, 6, q.shape[-1])


def slot_derivatives_autodiff(model: Model, q: Tensor) -> Tensor:
    """Reference for :func:`slot_derivatives` by forward mode."""
    return vmap(jacfwd(lambda qq: slot_values(model, qq)))(q)


def _mm(A: Tensor, B: Tensor) -> Tensor:
    """Product of 3 x 3 matrices stored frames-last: ``(..., 3, 3, T) @ (..., 3, 3, T)``."""
    return (A[..., :, :, None, :] * B[..., None, :, :, :]).sum(-3)


def _mv(A: Tensor, v: Tensor) -> Tensor:
    """``A (..., 3, 3, T or 1) @ v (..., 3, T or 1)`` frames-last -> ``(..., 3, T)``."""
    return (A * v[..., None, :, :]).sum(-2)


def _cross(a: Tensor, b: Tensor, index: Tensor, dim: int = 1) -> Tensor:
    """``a x b`` along ``dim`` (size 3) for broadcastable ``a``, ``b``: with the components
    rotated by one and by two places (``index (2, 3)``: the orders ``[1, 2, 0]``, ``[2, 0, 1]``;
    :attr:`JacobianPlan.cross_index`), ``(a x b) = a[1,2,0] * b[2,0,1] - a[2,0,1] * b[1,2,0]``."""
    i1, i2 = index[0], index[1]
    return a.index_select(dim, i1) * b.index_select(dim, i2) - a.index_select(dim, i2) * b.index_select(dim, i1)


class MarkerTargets(NamedTuple):
    """Measured markers for :meth:`JacobianPlan.normal_equations`, frames-last: positions
    ``X (M, 3, T)`` (m) and residual weights ``w (M, T)`` (square root of the marker weight, 0
    in gaps)."""

    X: Tensor
    w: Tensor

    @classmethod
    def of(cls, X: Tensor, weights: Tensor) -> "MarkerTargets":
        """From frames-first ``X (T, M, 3)`` and ``weights (T, M)``."""
        return cls(X.permute(1, 2, 0).contiguous(), weights.t().contiguous())

    def frames(self, idx: Tensor) -> "MarkerTargets":
        """The frames ``idx (n,)`` only."""
        return MarkerTargets(self.X.index_select(2, idx), self.w.index_select(1, idx))


class FrameKinematics(NamedTuple):
    """Output of :meth:`JacobianPlan.evaluate` for ``T`` frames.

    ``p (T, M, 3)`` marker positions (m); ``J (T, M, 3, Cf)`` their derivatives w.r.t. the plan's
    columns (``None`` when not asked for; rows multiplied by ``weights`` when given);
    ``R_markers (T, M, 3, 3)`` world orientation of each marker's body; ``H (T, B, 3, 4)``
    world pose ``[R | t]`` of every body (model order); ``dp_ds (T, M, 3, B, 3)`` the
    derivatives of the marker positions w.r.t. every body's scale factors ``s_body =
    global_scale * body_scales`` (model order; ``None`` unless asked for).
    """

    p: Tensor
    J: Optional[Tensor]
    R_markers: Tensor
    H: Tensor
    dp_ds: Optional[Tensor] = None


class KinematicConstants(NamedTuple):
    """What :meth:`JacobianPlan.evaluate` needs from the model's leaves, computed once per model
    (:meth:`JacobianPlan.constants`): the forward pass's :class:`kinfunc.kinematics.JointConstants`
    (same fields, level order) and the Jacobian's axes."""

    slot_coeffs: tuple
    coupler_coeffs: tuple
    v_const: Tensor
    Ev: Tensor
    Rconst: Tensor
    G: Tensor
    tp: Tensor
    tc: Tensor
    off: Tensor
    h_row: Tensor
    A: Tensor  # (3 terms, NE, 3, 1): each entry's axis (unit rotation axis or scaled translation axis) before its world rotation, A0 + sin(v0) A1 + (1 - cos(v0)) A2
    Gu: Tensor  # (B, 3, 3): unit translation axis k in the parent body frame
    Wtr: Tensor  # (B, 3 slots, 3 axes): d translation scale of slot k' / d parent scale along axis k


assert KinematicConstants._fields[: len(JointConstants._fields)] == JointConstants._fields


class ModelKinematics:
    """What the IK derives from one model's tensors: an explicit value, made by
    :func:`kinfunc.ik.solve` for the model it solves with (or by the user with
    :func:`kinfunc.ik.prepare` and passed as ``solve(..., kinematics=)`` to many solves with one
    model) and handed down to the start, the solver and the restarts (like MJX's
    ``kinematics(m, d) -> d``: values travel as arguments; nothing is kept in a module or keyed
    on object identity).

    Its parts are computed on first use from the model's values and then kept on this object,
    detached (no graph; inference tensors when first used in inference mode, as in a solve):
    :attr:`frames` (:class:`JointFrames`), the joint constants every :class:`JacobianPlan`
    selects its own from (:meth:`JacobianPlan.constants`), the plans (:meth:`plan`) and values
    other modules derive (:meth:`derived`: the root joint's closed form, the start's
    closed-form joints). :meth:`for_model` gives the same kinematics for a model with equal
    joint values (the model restricted to a trial's markers, converted to the same dtype) and
    refuses a model whose joint values differ or changed in place since.
    """

    def __init__(self, model: Model, _shared: Optional[dict] = None):
        self.model = model
        if _shared is None:
            _shared = {"leaves": model.joint_leaves(), "versions": _versions(model), "derived": {}, "joint": None, "plans": {}}
        self._shared = _shared  # parts that depend on the joint tensors only (not on the markers)
        self._joint_constants: Optional[KinematicConstants] = None

    def for_model(self, model: Model) -> "ModelKinematics":
        """These kinematics for ``model``, whose joint tensors must equal (in value, dtype and
        device) those these were made from, and not have changed in place since; its markers may
        differ. Raises ``ValueError`` otherwise."""
        if model is self.model:
            self._check_unchanged()
            return self
        old, new = self._shared["leaves"], model.joint_leaves()
        same = len(old) == len(new) and model.topology.parents == self.model.topology.parents and all(
            a is b or (a.dtype == b.dtype and a.device == b.device and a.shape == b.shape and torch.equal(a, b))
            for a, b in zip(old, new)
        ) and model.topology.slot_groups == self.model.topology.slot_groups \
            and model.topology.coupler_groups == self.model.topology.coupler_groups
        if not same:
            raise ValueError("kinematics were prepared for another model (other joint values, dtype or device): "
                             "prepare them from this model (kinfunc.ik.prepare(model, dtype=...))")
        self._check_unchanged()
        return ModelKinematics(model, self._shared)

    def _check_unchanged(self) -> None:
        if _versions(self.model, self._shared["leaves"]) != self._shared["versions"]:
            raise ValueError("the model's joint tensors changed in place after its kinematics were prepared: "
                             "prepare them again (kinfunc.ik.prepare)")

    @property
    def frames(self) -> JointFrames:
        sh = self._shared
        if "frames" not in sh:
            with _detached():
                sh["frames"] = JointFrames.of(self.model)
        return sh["frames"]

    def plan(self, columns: Optional[Sequence[int]] = None) -> "JacobianPlan":
        """The :class:`JacobianPlan` of this model for ``columns`` (default all), made once (per
        marker set: plans depend on the topology)."""
        plans = self._shared["plans"]
        key = (self.model.topology, None if columns is None else tuple(int(c) for c in columns))
        if key not in plans:
            plans[key] = JacobianPlan.build(self.model, key[1])
        return plans[key]

    def _joint(self, plan: "JacobianPlan") -> KinematicConstants:
        """The constants of every plan for this model (before the selection of a plan's axis
        rows; they do not depend on the plan's columns, so the first plan to ask computes them)."""
        if self._joint_constants is None:
            sh = self._shared
            if sh["joint"] is None:
                frames = self.frames
                with _detached():
                    sh["joint"] = (self.model, plan._compute_constants(self.model, frames))
            owner, joint = sh["joint"]
            if owner is not self.model:  # the same joints with other markers
                with _detached():
                    joint = joint._replace(off=marker_rows(plan.kplan, self.model))
            self._joint_constants = joint
        return self._joint_constants

    def derived(self, key: Any, compute) -> Any:
        """``compute(self)``, computed once per ``key`` (a hashable, static description: a
        function, a closed-form kind of joint, which includes its markers) and kept with these
        kinematics."""
        memo = self._shared["derived"]
        if key not in memo:
            with _detached():
                memo[key] = compute(self)
        return memo[key]


def _versions(model: Model, leaves=None) -> tuple:
    """The version counters of the model's joint tensors (``None`` for inference tensors, which
    have none)."""
    return tuple(None if t.is_inference() else t._version for t in (leaves if leaves is not None else model.joint_leaves()))


_detached = torch.no_grad  # the kept values carry no graph


@dataclasses.dataclass(frozen=True, eq=False)
class JacobianPlan:
    """Marker positions and analytic marker Jacobians for many frames, with everything that
    does not depend on ``q`` worked out once.

    Built from a model's topology and the coordinates whose columns are wanted
    (:meth:`build`); :meth:`constants` precomputes the model-dependent parts (rotation factors,
    spline coefficients, scaled offsets) and :meth:`evaluate` runs one frames-last pass
    (:func:`kinfunc.kinematics.forward` with the plan's :attr:`kplan`: frames innermost, bodies
    by tree level) and keeps each joint's world axes and centres from it. Each (joint slot,
    coordinate) pair that can be non-zero is an *entry*; the marker
    Jacobian sums entries over ancestor joints with one matrix product per kind (rotation /
    translation).
    """

    topology: Any
    columns: tuple[int, ...]  # coordinate index of each Jacobian column
    kplan: KinematicPlan  # the forward pass's plan (kinfunc.kinematics): bodies in level order, joint slots
    ent_out: Tensor  # (NR + NT,) long: index into the slot derivative rows
    ent_dep: Tensor  # (NR + NT,) long: coupler derivative row (n_dep = none)
    ent_axis: Tensor  # (NR + NT,) long: row of the axis table (KinematicConstants.A)
    ent_src: Tensor  # (NR + NT,) long: row of [I; world rotations] turning the axis into the world frame (parent's, or own for a 3rd rotation slot)
    ent_body: Tensor  # (NR + NT,) long: level position of the entry's body
    ent_v0: Optional[Tensor]  # (NR + NT,) long: row of the body's first slot value, for 2nd-slot axes that turn with it (None if none do)
    ent_rot: Tensor  # (NR + NT, 1, 1): 1 for rotation entries, 0 for translation entries
    S: Tensor  # (Cf * nb, NR + NT): entry e acts on column c of marker body bm
    # normal equations: entries on one body driven by one column move the same markers the same
    # way, so they are summed first (NS "column entries", one per (body, column))
    ent_group: Optional[Tensor]  # (NR + NT,) long: column entry of each entry (None: one each)
    grp_col: Tensor  # (NS,) long: Jacobian column of each column entry
    grp_body: Tensor  # (NS,) long: row of its body in grp_markers
    grp_markers: Tensor  # (NB, M): per body carrying column entries, 1 where the marker's body is it or below it
    pair_lo: Tensor  # (P,) long: column-entry pairs on one chain: the one nearer the root (or either on one body) ...
    pair_hi: Tensor  # (P,) long: ... and the other
    pair_at: Tensor  # (P,) long: row * Cf + column of the pair in J^T J
    pair_w: Tensor  # (P,) 1/2 for a column entry paired with itself, else 1 (J^T J = U + U^T)
    marker_bm: Tensor  # (M,) long: index into the distinct marker bodies
    n_marker_bodies: int

    cross_index: Tensor = None  # (2, 3) long: the component orders [1, 2, 0] and [2, 0, 1] (for _cross)

    @classmethod
    def build(cls, model: Model, columns: Optional[Sequence[int]] = None) -> "JacobianPlan":
        """Plan for ``model``'s topology; ``columns``: coordinate indices of the Jacobian's columns
        (default all, in order). What depends only on the (hashable) topology and the columns is
        worked out once per topology in plain Python (:func:`_plan_tables`); the index tensors
        are made from it here, on the model's device (microseconds: one buffer, split)."""
        C = model.topology.n_coordinates
        columns = tuple(range(C)) if columns is None else tuple(int(c) for c in columns)
        return cls._from_tables(_plan_tables(model.topology, columns), model.dtype, model.device)

    @classmethod
    def _from_tables(cls, tables: "_PlanTables", dtype: torch.dtype, dev: torch.device) -> "JacobianPlan":
        with torch.inference_mode(False):  # ordinary tensors, whatever the caller's mode
            flat = torch.frombuffer(bytearray(tables.buffer), dtype=torch.long)
            if dev.type != "cpu":
                flat = flat.to(dev)
            split = zip(tables.layout, flat.split(tables.sizes))
            t = {name: part if len(shape) == 1 else part.view(shape) for (name, shape), part in split}
            S = torch.zeros(tables.S_shape, dtype=dtype, device=dev)
            S[t.pop("S_row"), t.pop("S_col")] = 1.0
            grp_markers = torch.zeros(tables.grp_markers_shape, dtype=dtype, device=dev)
            grp_markers[t.pop("gm_row"), t.pop("gm_col")] = 1.0
            ent_rot = t.pop("ent_rot").to(dtype).reshape(-1, 1, 1)
            pair_w = 1.0 - 0.5 * t.pop("pair_self").to(dtype)
        for name in tables.absent:
            t[name] = None
        return cls(
            topology=tables.topology, columns=tables.columns, kplan=KinematicPlan.build(tables.topology, dev), S=S,
            grp_markers=grp_markers, ent_rot=ent_rot, pair_w=pair_w, n_marker_bodies=tables.n_marker_bodies, **t,
        )

    @property
    def order(self) -> Tensor:
        """``(B,)`` long: body at each level-order position (:attr:`KinematicPlan.order`)."""
        return self.kplan.order

    @property
    def order_inv(self) -> Optional[Tensor]:
        """``(B,)`` long: level position of each body, None if the identity."""
        return self.kplan.order_inv

    @functools.cached_property
    def _scale_index(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Index tensors of :meth:`_scale_derivatives` (built on first use: only scale fits need
        them), per (marker, body in level order): the next joint on the path (model index; B =
        none), 1 where the body is on the path, 1 where it carries the marker, and the row of
        ``Y`` (next joint position * 3 + axis; B * 3 = zero)."""
        topo = self.topology
        B = topo.n_bodies
        order = self.order.tolist()
        pos = {b: k for k, b in enumerate(order)}
        dev, dtype = self.S.device, self.S.dtype
        nxt, onpath, self_, ys = [], [], [], []
        for mb in topo.marker_bodies:
            path = {}  # body -> next joint (child body) towards the marker, None for the marker's body
            b, child = mb, None
            while b >= 0:
                path[b] = child
                b, child = topo.parents[b], b
            for beta in order:
                j = path.get(beta, "off")
                on = j != "off"
                nxt.append(j if (on and j is not None) else B)
                onpath.append(1.0 if on else 0.0)
                self_.append(1.0 if beta == mb else 0.0)
                ys.extend(pos[j] * 3 + k if (on and j is not None) else B * 3 for k in range(3))
        lt = lambda x: torch.tensor(x, dtype=torch.long, device=dev)  # noqa: E731
        ft = lambda x: torch.tensor(x, dtype=dtype, device=dev)  # noqa: E731
        with torch.inference_mode(False):  # kept with the plan
            return lt(nxt), ft(onpath), ft(self_), lt(ys)

    def constants(self, model: Model, kinematics: Optional["ModelKinematics"] = None) -> KinematicConstants:
        """Model-dependent constants of this plan (rotation factors, spline coefficients, scaled
        offsets).

        ``kinematics``: ``model``'s :class:`ModelKinematics`, which every plan of a solve
        shares: what does not depend on the plan's columns is computed there once, and this is
        an index selection from it. Without it everything is computed here (differentiable in
        the model's leaves). Nothing is kept anywhere else: an in-place change of a model
        tensor shows in the next call without ``kinematics`` or with a new one."""
        if kinematics is None:
            joint = self._compute_constants(model)
        else:
            if kinematics.model is not model:
                raise ValueError("JacobianPlan.constants: kinematics were prepared for another model")
            joint = kinematics._joint(self)
        return joint._replace(A=joint.A.index_select(1, self.ent_axis))

    def _compute_constants(self, model: Model, frames: Optional[JointFrames] = None) -> KinematicConstants:
        """Every constant of :class:`KinematicConstants`: the forward pass's
        (:func:`kinfunc.kinematics.joint_parts`) and ``A`` for every possible entry (the axis
        table; :meth:`constants` selects this plan's rows): nothing here depends on the columns.
        ``frames``: the model's :class:`JointFrames` if already computed."""
        kp = self.kplan
        frames = frames if frames is not None else JointFrames.of(model)
        joint, fac = joint_parts(kp, model, frames)
        axes, Rp, Rc = frames
        o = kp.order
        a0, a1, a2 = axes[:, 0], axes[:, 1], axes[:, 2]
        # entry axes: 1st slot about u1 = Rp a0, 2nd about Rp R0(v0) a1, 3rd about u3 = Rc a2
        # (child frame), translations along the scaled axes G (parent frame)
        rp = lambda v: (Rp @ v[..., None])[..., 0]  # noqa: E731
        u3 = (Rc @ a2[..., None])[..., 0]
        Ef0 = fac.Ef.reshape(-1, 3, 3, 3, 3)[:, 0]  # (B, 3 terms, 3, 3): each first slot's factor, level order
        varies = torch.tensor(kp.first_varies, dtype=torch.long, device=a0.device)  # bodies whose first slot varies
        turns = a0.new_zeros(len(kp.position), 1, 1).index_fill(0, varies, 1.0)
        a1o = a1[o][..., None]
        U2 = torch.stack((fac.Rk0.reshape(-1, 3, 3, 3)[:, 0] @ a1o, turns * Ef0[:, 1] @ a1o, turns * Ef0[:, 2] @ a1o), 1)[..., 0]
        one = lambda v: torch.stack((v, torch.zeros_like(v), torch.zeros_like(v)), 0)  # noqa: E731
        A = torch.cat((one(rp(a0)[o]), U2.transpose(0, 1), one(u3[o]), one(joint.G[..., 0].reshape(-1, 3))), 1)
        return KinematicConstants(
            *joint, A=A[..., None], Gu=fac.Gu[o], Wtr=translation_weights(model.axes, model.topology.unscaled_slots)[0][o]
        )

    def _forward(self, model: Model, consts: KinematicConstants, q: Tensor):
        """One frames-last FK pass at ``q (T, C)`` (:func:`kinfunc.kinematics.forward`): world poses
        ``Hw (B, 3, 4, T)`` (level order), the marker bodies' poses ``Hm (M, 3, 4, T)``, marker
        positions ``p (M, 3, T)`` and what the Jacobian reuses (slot values ``v (B * 6, T)``, slot
        and coupler derivatives, ``vT``: the slot values as ``(B, 6, T)``)."""
        f = forward(self.kplan, consts, q.t())
        return f.Hw, f.Hm, f.p, (f.v, f.ders, f.cders, f.v.reshape(len(self.kplan.position), 6, q.shape[0]))

    def _entry_vectors(self, consts: KinematicConstants, q: Tensor, Hw: Tensor, aux, origin=None) -> Tensor:
        """``E (NE, 6, T)``: each entry's share ``[w; u]`` of the Jacobian of every marker below its
        joint, ``dp/dq = w x (p - origin) - u``: a rotation slot turns about its world axis ``w``
        (times the slot's derivative) through the joint centre ``c``, so ``u = w x (c - origin)``;
        a translation slot moves along its world axis ``tau`` (times the slot's derivative,
        ``w = 0``, ``u = -tau``). Rotation entries first, then translation entries."""
        v, ders, cders, _ = aux
        T = q.shape[0]
        # slot derivatives of the entries: d slot / d q (through a coupler if any)
        fac = (torch.cat(ders, 0) if ders else q.new_zeros(0, T)).index_select(0, self.ent_out)
        if cders:
            fac = fac * torch.cat(cders + [q.new_ones(1, T)], 0).index_select(0, self.ent_dep)
        A0, A1, A2 = consts.A  # each (NE, 3, 1)
        if self.ent_v0 is None:
            axis = A0
        else:  # second-slot axes turn with the first slot's angle
            v0 = v.index_select(0, self.ent_v0)[:, None]  # (NE, 1, T)
            axis = A0 + torch.sin(v0) * A1 + (1.0 - torch.cos(v0)) * A2
        Rw, tw = Hw[:, :, :3], Hw[:, :, 3]
        Wd = _mv(_with_ground(Rw).index_select(0, self.ent_src), axis) * fac[:, None]  # (NE, 3, T) world axes
        centre = (Rw * consts.tc).sum(2) + tw  # (B, 3, T) joint centres
        if origin is not None:
            centre = centre - origin
        top = Wd * self.ent_rot
        return torch.cat((top, _cross(top, centre.index_select(0, self.ent_body), self.cross_index) - (Wd - top)), 1)

    def _body_jacobians(self, consts: KinematicConstants, q: Tensor, Hw: Tensor, aux) -> Tensor:
        """``Zb (Cf, nb, 6, T)``: per column and marker body, the angular part (rows 0-2) and the
        offset part (rows 3-5) of the marker Jacobian, ``dp/dq = W x p - U``: the entries summed
        over the joints above the body (one matrix product)."""
        E = self._entry_vectors(consts, q, Hw, aux)
        T = E.shape[-1]
        return (self.S @ E.reshape(E.shape[0], 6 * T)).reshape(len(self.columns), self.n_marker_bodies, 6, T)

    def evaluate(
        self,
        model: Model,
        consts: KinematicConstants,
        q: Tensor,
        jacobian: bool = True,
        weights: Optional[Tensor] = None,
        scales: bool = False,
    ) -> FrameKinematics:
        """Markers (and Jacobian) at ``q (T, C)``; ``weights (T, M)`` multiply the Jacobian rows.
        ``scales``: also the derivatives w.r.t. the body scale factors (``dp_ds``, unweighted)."""
        Hw, Hm, p, aux = self._forward(model, consts, q)
        R_markers = Hm[:, :, :3].permute(3, 0, 1, 2)
        H = (Hw if self.order_inv is None else Hw.index_select(0, self.order_inv)).permute(3, 0, 1, 2)
        dp_ds = self._scale_derivatives(model, consts, Hw, aux[3]) if scales else None
        if not jacobian:
            return FrameKinematics(p.permute(2, 0, 1), None, R_markers, H, dp_ds)
        Zm = self._body_jacobians(consts, q, Hw, aux).index_select(1, self.marker_bm)  # (Cf, M, 6, T)
        J = _cross(Zm[:, :, :3], p[None], self.cross_index, dim=2) - Zm[:, :, 3:]  # (Cf, M, 3, T)
        if weights is not None:
            J = J * weights.t()[:, None, :]
        return FrameKinematics(p.permute(2, 0, 1), J.permute(3, 1, 2, 0), R_markers, H, dp_ds)

    def _parent_rotations(self, Rw: Tensor) -> Tensor:
        """World rotation of each body's parent ``(B, 3, 3, T)`` (identity for ground) from the
        bodies' ``Rw (B, 3, 3, T)``, level order."""
        return _with_ground(Rw).index_select(0, self.kplan.par_index)

    def _scale_derivatives(self, model: Model, consts: KinematicConstants, Hw: Tensor, vT: Tensor) -> Tensor:
        """``dp_m / d s_body[beta, k]`` ``(T, M, 3, B, 3)`` (model body order).

        Scales move only translations: for each body ``beta`` on marker ``m``'s path, the
        vectors fixed in ``beta``'s frame that ``s_beta`` multiplies - the next joint's
        parent-side location, minus ``beta``'s own child-side location, plus the marker's offset
        when ``beta`` carries it - give ``R_beta[:, k] c[m, beta, k]``; the translation slots
        of the next joint scale with ``beta`` by OpenSim's rule, giving ``Y[j, k]``.
        """
        topo = self.topology
        B, T = Hw.shape[0], Hw.shape[-1]
        M = topo.n_markers
        Rw = Hw[:, :, :3]  # (B, 3, 3, T) level order
        Rpar = self._parent_rotations(Rw)
        tau = (Rpar[:, None] * consts.Gu[:, :, None, :, None]).sum(3)  # (B, 3 k', 3, T): unit translation axes, world
        coef = vT[:, 3:, None, :] * consts.Wtr[..., None]  # (B, 3 k', 3 k, T)
        Y = (coef[:, :, :, None, :] * tau[:, :, None, :, :]).sum(1)  # (B, 3 k, 3, T)
        # constants per (marker, body on its path, axis), in level order
        sd_next, sd_onpath, sd_self, sd_y = self._scale_index
        zero = model.parent_location.new_zeros(1, 3)
        locp = torch.cat((model.parent_location, zero), 0).index_select(0, sd_next)  # (M * B, 3)
        locc = model.child_location.index_select(0, self.order).repeat(M, 1) * sd_onpath[:, None]
        offs = model.marker_offsets.repeat_interleave(B, 0) * sd_self[:, None]
        c = (locp - locc + offs).reshape(M, B, 3)
        D = c[..., None, None] * Rw.permute(0, 2, 1, 3)[None]  # (M, B, 3 k, 3 xyz, T)
        Yz = torch.cat((Y.reshape(B * 3, 3, T), Y.new_zeros(1, 3, T)), 0)
        D = D + Yz.index_select(0, sd_y).reshape(M, B, 3, 3, T)
        if self.order_inv is not None:
            D = D.index_select(1, self.order_inv)
        return D.permute(4, 0, 3, 1, 2)  # (T, M, 3 xyz, B, 3 k)

    def marker_costs(
        self, model: Model, consts: KinematicConstants, q: Tensor, targets: MarkerTargets
    ) -> tuple[Tensor, Tensor]:
        """The forward pass of :meth:`normal_equations` alone: ``cost (T,)`` (sum of squared
        weighted marker residuals) and marker positions ``p (T, M, 3)`` at ``q (T, C)``."""
        p = self._forward(model, consts, q)[2]
        return _residuals(p, targets)[1], p.permute(2, 0, 1).contiguous()  # (contiguous: reductions over xyz are slow on the view)

    def normal_equations(
        self, model: Model, consts: KinematicConstants, q: Tensor, targets: MarkerTargets
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Gauss-Newton normal equations of the weighted marker residuals
        ``r_m = w_m (p_m(q) - X_m)``, without forming the per-marker Jacobian.

        ``q (T, C)``; ``targets``: the measured markers (:class:`MarkerTargets`, ``T`` frames).
        Returns ``cost (T,)`` (sum of squared residuals), ``A (T, Cf, Cf) = J^T J``,
        ``g (T, Cf) = J^T r`` and the marker positions ``p (T, M, 3)``.

        Entry ``e`` (a joint slot driven by a column) moves every marker below its joint by
        ``dp_m = -[S(p_m), I] E_e`` (:meth:`_entry_vectors`; positions about the root body's
        origin to keep them small). Summed over those markers, ``E_e1^T (sum_m w^2 [S(p), I]^T
        [S(p), I]) E_e2`` needs only the weighted moments ``sum w^2``, ``sum w^2 p``,
        ``sum w^2 p p^T`` of the markers below the deeper of two entries on one chain (other
        pairs move no common marker), and ``J^T r`` the moments ``sum w r``, ``sum w r x p``.
        Entries on one body driven by one column (a knee angle turning the knee and sliding it
        along its splines) move the same markers, so their ``E`` are summed first.
        """
        Hw, _, p, aux = self._forward(model, consts, q)
        origin = Hw[0, :, 3]  # (3, T): the first root body's origin
        E = self._entry_vectors(consts, q, Hw, aux, origin)  # (NE, 6, T)
        M, T, Cf = p.shape[0], q.shape[0], len(self.columns)
        if self.ent_group is not None:  # one vector per (body, column)
            E = E.new_zeros(self.grp_col.numel(), 6, T).index_add_(0, self.ent_group, E)
        w = targets.w
        r, cost = _residuals(p, targets)
        pr = p - origin
        w2 = w * w
        w2p = w2[:, None] * pr
        wr = w[:, None] * r
        per_marker = torch.cat((w2[:, None], w2p, (w2p[:, :, None] * pr[:, None]).reshape(M, 9, T), wr, _cross(wr, pr, self.cross_index)), 1)
        # moments of the markers below each body carrying column entries, then per column entry: (NS, 19, T)
        mom = (self.grp_markers @ per_marker.reshape(M, 19 * T)).reshape(-1, 19, T).index_select(0, self.grp_body)
        a, c, ppT, rho, phi = mom.split((1, 3, 9, 3, 3), 1)
        Wv, Uv = E.split(3, 1)
        # N E with N = [[|p|^2 I - p p^T, -S(c)], [S(c), a I]] per column entry
        ppT = ppT.reshape(-1, 3, 3, T)
        trace = ppT.diagonal(dim1=1, dim2=2).sum(-1, keepdim=True).transpose(1, 2)  # (NS, 1, T)
        cw, cu = _cross(c[:, None], E.reshape(-1, 2, 3, T), self.cross_index, dim=2).unbind(1)  # (NS, 3, T) each: c x w, c x u
        top = trace * Wv - (ppT * Wv[:, None]).sum(2) - cu
        NE_ = torch.cat((top, cw + a * Uv), 1)  # (NS, 6, T)
        dots = (E.index_select(0, self.pair_lo) * NE_.index_select(0, self.pair_hi)).sum(1) * self.pair_w[:, None]
        U = dots.new_zeros(Cf * Cf, T).index_add_(0, self.pair_at, dots).reshape(Cf, Cf, T)
        A = (U + U.transpose(0, 1)).permute(2, 0, 1).contiguous()
        ge = -(Wv * phi + Uv * rho).sum(1)  # (NS, T)
        g = ge.new_zeros(Cf, T).index_add_(0, self.grp_col, ge).t()
        return cost, A, g, p.permute(2, 0, 1)


def _with_ground(Rw: Tensor) -> Tensor:
    """``[I; Rw] (B + 1, 3, 3, T)``: the ground's rotation, then the bodies' ``Rw (B, 3, 3, T)``."""
    eye = torch.eye(3, dtype=Rw.dtype, device=Rw.device)[..., None].expand(1, 3, 3, Rw.shape[-1])
    return torch.cat((eye, Rw), 0)


def _residuals(p: Tensor, targets: MarkerTargets) -> tuple[Tensor, Tensor]:
    """Weighted marker residuals ``r = w (p - X)`` ``(M, 3, T)`` of frames-last positions
    ``p (M, 3, T)`` and their per-frame sum of squares ``(T,)``."""
    r = (p - targets.X) * targets.w[:, None]
    return r, (r * r).sum((0, 1))


def marker_jacobian(model: Model, q: Tensor) -> tuple[Tensor, Tensor]:
    """Marker positions ``(T, M, 3)`` (m) and ``dp/dq (T, M, 3, C)`` at ``q (T, C)``
    (one-off convenience around :class:`JacobianPlan`)."""
    plan = JacobianPlan.build(model)
    out = plan.evaluate(model, plan.constants(model), q)
    return out.p, out.J


def full_coordinate_derivatives(model: Model, q: Tensor) -> Tensor:
    """``d[q, dependents]/dq (T, C + D, C)``; couplers whose inputs are themselves dependents
    fall back to forward mode."""
    topo = model.topology
    C = q.shape[-1]
    eye = torch.eye(C, dtype=q.dtype, device=q.device).expand(q.shape[0], C, C)
    if not topo.dependent_names:
        return eye
    if any(i >= C for g in topo.coupler_groups for i in g.inputs):
        return vmap(jacfwd(lambda qq: full_coordinates(model, qq)))(q)
    dd = _group_derivatives(topo.coupler_groups, model.coupler_params, q, eye, len(topo.dependent_names))
    return torch.cat((eye, dd), 1)


class _PlanTables(NamedTuple):
    """The tensor-free part of a :class:`JacobianPlan` (per topology and columns) beyond its
    :class:`~kinfunc.kinematics.KinematicPlan`: every index table as one buffer of int64
    (``layout``: name and shape of each part, ``sizes``: their lengths), the 0/1 matrices as the
    positions of their ones, and the plain fields."""

    topology: Any
    columns: tuple
    n_marker_bodies: int
    S_shape: tuple
    grp_markers_shape: tuple
    absent: tuple  # optional index tables that are None
    layout: tuple  # ((name, shape), ...)
    sizes: tuple
    buffer: bytes


@functools.lru_cache(maxsize=64)  # plain Python values only (no tensors): a solve uses one per start level, plus the solver's
def _plan_tables(topo: Any, columns: tuple[int, ...]) -> _PlanTables:
    """What :class:`JacobianPlan` (its fields' comments) holds, worked out from the topology and
    the columns alone (the forward pass's tables: :func:`kinfunc.kinematics.plan_tables`)."""
    C, B = topo.n_coordinates, topo.n_bodies
    kt = plan_tables(topo)
    col_of = {c: k for k, c in enumerate(columns)}
    parts: list = []  # (name, shape, values)
    absent: list = []

    def lt(name, values):
        values = [int(v) for v in values]
        parts.append((name, (len(values),), values))

    sched = topo.schedule
    order = list(sched.order)
    pos = dict(enumerate(kt.position))
    # coupler outputs: dependent d <- (its coordinate, its column among coupler values)
    dep_src: dict[int, tuple[int, int]] = {}
    col = 0
    for g in topo.coupler_groups:
        for o, i in zip(g.outputs, g.inputs):
            dep_src[o] = (i, col)
            col += 1
    n_dep = col
    # entries: (level-order flat slot, coordinate column, slot-derivative column, coupler column),
    # slot-derivative columns in the forward pass's order (its evaluation units)
    entries, col = [], 0
    for unit in kt.slot_units:
        for g in (topo.slot_groups[k] for k in unit):
            for o, i in zip(g.outputs, g.inputs):
                flat = pos[o // 6] * 6 + o % 6
                coord, dcol = (i, n_dep) if i < C else dep_src[i - C]
                if coord in col_of:
                    entries.append((flat, col_of[coord], col, dcol))
                col += 1
    first_varies = set(kt.first_varies)  # bodies whose first rotation slot varies: their 2nd slot's axis turns with it
    rot = [e for e in entries if e[0] % 6 < 3]
    tr = [e for e in entries if e[0] % 6 >= 3]
    mbodies = sorted(set(topo.marker_bodies))

    def chain(b):  # level positions of b and the bodies above it
        return {pos[a] for a, up in enumerate(sched.ancestors[b]) if up}

    anc = [chain(b) for b in mbodies]
    Cf = len(columns)
    ents = rot + tr
    S_ones = [(c * len(mbodies) + k, e) for e, (o, c, _, _) in enumerate(ents) for k, ch in enumerate(anc) if o // 6 in ch]
    marker_chains = [chain(b) for b in topo.marker_bodies]
    groups: dict[tuple[int, int], int] = {}  # (body position, column) -> column entry
    for o, c, _, _ in ents:
        groups.setdefault((o // 6, c), len(groups))
    gkeys = list(groups)
    gbodies = sorted({b for b, _ in gkeys})
    # column-entry pairs that move common markers: one's body is the other's or an ancestor of it
    body_chain = {b: chain(order[b]) for b in gbodies}
    pairs = []
    for s1, (b1, c1) in enumerate(gkeys):
        for s2, (b2, c2) in enumerate(gkeys):
            if (b1 == b2 and s1 <= s2) or (b1 != b2 and b1 in body_chain[b2]):
                pairs.append((s1, s2, c1 * Cf + c2, 1 if s1 == s2 else 0))
    # entry axes: rows of the axis table (1st slots' axes, 2nd, 3rd, then translation axes)
    # and the rotation taking them to the world (the parent's; the body's own for a 3rd slot)
    axis_row = lambda o: (o % 6) * B + o // 6 if o % 6 < 3 else 3 * B + (o // 6) * 3 + o % 6 - 3  # noqa: E731
    par_row = [pos[topo.parents[b]] + 1 if topo.parents[b] >= 0 else 0 for b in order]
    src_row = lambda o: o // 6 + 1 if o % 6 == 2 else par_row[o // 6]  # noqa: E731
    turning = any(o % 6 == 1 and o // 6 in first_varies for o, _, _, _ in rot)
    gm = [(i, m) for i, b in enumerate(gbodies) for m, ch in enumerate(marker_chains) if b in ch]
    lt("ent_out", [e[2] for e in ents])
    lt("ent_dep", [e[3] for e in ents])
    lt("ent_axis", [axis_row(e[0]) for e in ents])
    lt("ent_src", [src_row(e[0]) for e in ents])
    lt("ent_body", [e[0] // 6 for e in ents])
    if turning:
        lt("ent_v0", [(e[0] // 6) * 6 for e in ents])
    else:
        absent.append("ent_v0")
    lt("ent_rot", [1 if e[0] % 6 < 3 else 0 for e in ents])
    lt("S_row", [r for r, _ in S_ones])
    lt("S_col", [e for _, e in S_ones])
    if len(gkeys) == len(ents):
        absent.append("ent_group")
    else:
        lt("ent_group", [groups[(o // 6, c)] for o, c, _, _ in ents])
    lt("grp_col", [c for _, c in gkeys])
    lt("grp_body", [gbodies.index(b) for b, _ in gkeys])
    lt("gm_row", [i for i, _ in gm])
    lt("gm_col", [m for _, m in gm])
    lt("pair_lo", [x[0] for x in pairs])
    lt("pair_hi", [x[1] for x in pairs])
    lt("pair_at", [x[2] for x in pairs])
    lt("pair_self", [x[3] for x in pairs])
    lt("marker_bm", [mbodies.index(b) for b in topo.marker_bodies])
    parts.append(("cross_index", (2, 3), [1, 2, 0, 2, 0, 1]))
    flat = [v for _, _, vals in parts for v in vals]
    return _PlanTables(
        topology=topo,
        columns=tuple(columns),
        n_marker_bodies=len(mbodies),
        S_shape=(Cf * len(mbodies), len(ents)),
        grp_markers_shape=(len(gbodies), len(marker_chains)),
        absent=tuple(absent),
        layout=tuple((name, shape) for name, shape, _ in parts),
        sizes=tuple(len(vals) for _, _, vals in parts),
        buffer=array.array("q", flat).tobytes(),
    )
