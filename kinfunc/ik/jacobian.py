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
worked out once: frames-last storage (``(bodies, 3, 3, T)``), bodies by tree level, one GEMM per
kind of joint slot for the sums over ancestors, closed-form derivatives w.r.t. body scale
factors, and Gauss-Newton normal equations from the moments of the markers below each joint
entry (:meth:`JacobianPlan.normal_equations`) that never form the per-marker Jacobian.
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
from .. import transforms as tf
from ..fk import effective_scales, full_coordinates, slot_values, translation_scales, translation_weights
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
    (:meth:`JacobianPlan.constants`). Body-indexed tensors are in the plan's level order."""

    slot_coeffs: tuple  # per evaluation unit: kinfunc.functions.coefficients (spline units: stack_tables)
    coupler_coeffs: tuple  # per coupler group
    v_const: Tensor  # (B * 6, 1): values of slots driven by constant functions (0 elsewhere)
    Ev: Tensor  # (3 terms, V, 3, 3, 1): varying rotation factors (constant neighbours absorbed) = Ev0 + sin(v) Ev1 + (1 - cos(v)) Ev2
    Rconst: Tensor  # (nc, 3, 3, 1): local rotation of each body without varying rotation slots
    A: Tensor  # (3 terms, NE, 3, 1): each entry's axis (unit rotation axis or scaled translation axis) before its world rotation, A0 + sin(v0) A1 + (1 - cos(v0)) A2
    G: Tensor  # (B, 3, 3, 1): scaled translation axis k in the parent body frame
    Gu: Tensor  # (B, 3, 3): unit translation axis k in the parent body frame
    Wtr: Tensor  # (B, 3 slots, 3 axes): d translation scale of slot k' / d parent scale along axis k
    tp: Tensor  # (B, 3, 1): parent-side frame location (scaled)
    tc: Tensor  # (B, 1, 3, 1): child-side frame location (scaled), as a row
    off: Tensor  # (M, 1, 4, 1): scaled marker offsets, homogeneous, as rows
    h_row: Tensor  # (1, 1, 4, 1): the last row [0, 0, 0, 1] of a 4 x 4 pose


class JointFrames(NamedTuple):
    """A model's joint frames, model body order: unit slot axes ``axes (B, 6, 3)``, parent-side
    and child-side frame orientations ``Rp``, ``Rc (B, 3, 3)``."""

    axes: Tensor
    Rp: Tensor
    Rc: Tensor

    @classmethod
    def of(cls, model: Model) -> "JointFrames":
        axes = model.axes / torch.linalg.vector_norm(model.axes, dim=-1, keepdim=True)
        R = tf.euler_xyz_to_matrix(torch.stack((model.parent_orientation, model.child_orientation)))
        return cls(axes, R[0], R[1])


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
                    joint = joint._replace(off=_offset_rows(self.model))
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


def _offset_rows(model: Model) -> Tensor:
    """Scaled marker offsets, homogeneous, as rows ``(M, 1, 4, 1)`` (:attr:`KinematicConstants.off`)."""
    off = model.marker_offsets * (model.global_scale * model.body_scales)[list(model.topology.marker_bodies)]
    return torch.cat((off, torch.ones_like(off[:, :1])), -1)[:, None, :, None]


_detached = torch.no_grad  # the kept values carry no graph


@dataclasses.dataclass(frozen=True, eq=False)
class JacobianPlan:
    """Marker positions and analytic marker Jacobians for many frames, with everything that
    does not depend on ``q`` worked out once.

    Built from a model's topology and the coordinates whose columns are wanted
    (:meth:`build`); :meth:`constants` precomputes the model-dependent parts (rotation factors,
    spline coefficients, scaled offsets) and :meth:`evaluate` runs one frames-last pass: frames
    are the innermost (contiguous) axis, so every 3 x 3 product is an elementwise op over
    frames instead of thousands of tiny matrix products. Bodies are stored by tree level, so
    each level is a contiguous slice composed with its parents (in the level above) by one
    product. Each (joint slot, coordinate) pair that can be non-zero is an *entry*; the marker
    Jacobian sums entries over ancestor joints with one matrix product per kind (rotation /
    translation).
    """

    topology: Any
    columns: tuple[int, ...]  # coordinate index of each Jacobian column
    order: Tensor  # (B,) long: body at each level-order position
    levels: tuple  # per tree level: (start, size, parent positions in the level above (LongTensor) or an int if one parent)
    order_inv: Optional[Tensor]  # (B,) long: level position of each body (None if identity)
    slot_units: tuple  # slot groups evaluated together: each non-constant non-spline group, then all spline groups
    slot_inputs: tuple  # per unit: LongTensor of its inputs into [q, dependents]
    slot_where: Tensor  # (B * 6,) long: level-order flat slot -> column of cat(group values..., 0)
    rot_var: Tensor  # (V,) long: position * 3 + slot of each varying rotation slot (driven by a non-constant function), factor order
    rot_var_col: Tensor  # (V,) long: its row in the slot values (position * 6 + slot)
    n_factors: tuple  # (N1, N2, N3): bodies with at least 1, 2, 3 varying rotation slots; factor order = their 1st, 2nd, 3rd varying slots (bodies by count, most first)
    fac_pre: Tensor  # (V, 2) long: constant slot factors absorbed before each varying factor (rows of [Rk0; I])
    fac_post: Tensor  # (V, 2) long: ... and after it
    const_slots: Tensor  # (nc, 3) long: the three slot factors of each body without varying rotation slots
    rloc_order: Optional[Tensor]  # (B,) long: level position -> row of [varying bodies (by count); constant bodies] (None if identity)
    coupler_inputs: tuple  # per coupler group: LongTensor of its inputs into q
    dep_where: Tensor  # (D,) long: dependent -> column of cat(coupler values...)
    par_index: Tensor  # (B,) long: parent position + 1 (0 = ground) into [identity, world]
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
    marker_pos: Tensor  # (M,) long: level position of each marker's body
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
        levels = tuple((a, n, t.pop(f"level_par:{k}") if par == "tensor" else par) for k, (a, n, par) in enumerate(tables.levels))
        slot_inputs = tuple(t.pop(f"slot_inputs:{k}") for k in range(len(tables.slot_units)))
        coupler_inputs = tuple(t.pop(f"coupler_inputs:{k}") for k in range(tables.n_coupler_groups))
        for name in tables.absent:
            t[name] = None
        return cls(
            topology=tables.topology, columns=tables.columns, levels=levels, slot_units=tables.slot_units,
            slot_inputs=slot_inputs, n_factors=tables.n_factors, coupler_inputs=coupler_inputs, S=S,
            grp_markers=grp_markers, ent_rot=ent_rot, pair_w=pair_w, n_marker_bodies=tables.n_marker_bodies, **t,
        )

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

    def _compute_constants(self, model: Model, frames: Optional["JointFrames"] = None) -> KinematicConstants:
        """Every constant of :class:`KinematicConstants`, ``A`` for every possible entry (the axis
        table; :meth:`constants` selects this plan's rows): nothing here depends on the columns.
        ``frames``: the model's :class:`JointFrames` if already computed."""
        topo = model.topology
        o = self.order
        s_body, s_parent = effective_scales(model)
        axes, Rp, Rc = frames if frames is not None else JointFrames.of(model)
        a0, a1, a2 = axes[:, 0], axes[:, 1], axes[:, 2]
        K = tf.skew(axes[:, :3])  # (B, 3, 3, 3)
        K2 = K @ K
        RcT = Rc.transpose(-1, -2)
        eye = torch.eye(3, dtype=model.dtype, device=model.device).expand_as(Rp)
        E = torch.stack(
            (
                torch.stack((Rp, Rp @ K[:, 0], Rp @ K2[:, 0]), 1),
                torch.stack((eye, K[:, 1], K2[:, 1]), 1),
                torch.stack((RcT, K[:, 2] @ RcT, K2[:, 2] @ RcT), 1),
            ),
            1,
        )
        s_tr = translation_scales(model, s_parent)  # (B, 3)
        Gu = (Rp[:, None] @ axes[:, 3:, :, None])[..., 0]  # (B, 3, 3): unit translation axes, parent frame
        rp = lambda v: (Rp @ v[..., None])[..., 0]  # noqa: E731
        u3 = (Rc @ a2[..., None])[..., 0]
        const = [(g, p) for g, p in zip(topo.slot_groups, model.slot_params) if g.key[0] is F.FnKind.CONSTANT]
        v_const = torch.zeros(topo.n_bodies * 6, dtype=model.dtype, device=model.device)
        pos = list(range(topo.n_bodies)) if self.order_inv is None else self.order_inv.tolist()
        for g, (value,) in const:
            flat = [pos[o // 6] * 6 + o % 6 for o in g.outputs]
            v_const = v_const.index_add(0, torch.tensor(flat, device=v_const.device), value)
        vc = v_const.reshape(-1, 6)[:, :3].reshape(-1)[..., None, None]  # (B * 3, 1, 1) level order
        Ef = E[o].reshape(-1, 3, 3, 3)
        Rk0 = Ef[:, 0] + torch.sin(vc) * Ef[:, 1] + (1.0 - torch.cos(vc)) * Ef[:, 2]  # every slot at its constant value
        CT = torch.cat((Rk0, eye[:1]), 0)  # ... and the identity
        pre = CT[self.fac_pre[:, 0]] @ CT[self.fac_pre[:, 1]]
        post = CT[self.fac_post[:, 0]] @ CT[self.fac_post[:, 1]]
        cs = self.const_slots
        # entry axes: 1st slot about u1 = Rp a0, 2nd about Rp R0(v0) a1, 3rd about u3 = Rc a2
        # (child frame), translations along the scaled axes G (parent frame)
        Ef0 = Ef.reshape(-1, 3, 3, 3, 3)[:, 0]  # (B, 3 terms, 3, 3): each first slot's factor, level order
        varies = self.rot_var[self.rot_var % 3 == 0] // 3  # bodies whose first slot varies
        turns = torch.zeros(topo.n_bodies, 1, 1, dtype=model.dtype, device=model.device).index_fill(0, varies, 1.0)
        a1o = a1[o][..., None]
        U2 = torch.stack((Rk0.reshape(-1, 3, 3, 3)[:, 0] @ a1o, turns * Ef0[:, 1] @ a1o, turns * Ef0[:, 2] @ a1o), 1)[..., 0]
        G = (Gu * s_tr[..., None])[o]
        one = lambda v: torch.stack((v, torch.zeros_like(v), torch.zeros_like(v)), 0)  # noqa: E731
        A = torch.cat((one(rp(a0)[o]), U2.transpose(0, 1), one(u3[o]), one(G.reshape(-1, 3))), 1)
        return KinematicConstants(
            slot_coeffs=tuple(
                F.stack_tables([F.coefficients(topo.slot_groups[k].key, model.slot_params[k]) for k in unit])
                for unit in self.slot_units
            ),
            coupler_coeffs=tuple(F.coefficients(g.key, p) for g, p in zip(topo.coupler_groups, model.coupler_params)),
            v_const=v_const[:, None],
            Ev=(pre[:, None] @ Ef.index_select(0, self.rot_var) @ post[:, None]).transpose(0, 1)[..., None],
            Rconst=(CT[cs[:, 0]] @ CT[cs[:, 1]] @ CT[cs[:, 2]])[..., None],
            A=A[..., None],
            G=G[..., None],
            Gu=Gu[o],
            Wtr=translation_weights(model.axes, topo.unscaled_slots)[0][o],
            tp=(model.parent_location * s_parent)[o][..., None],
            tc=(model.child_location * s_body)[o][:, None, :, None],
            off=_offset_rows(model),
            h_row=torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=a0.dtype, device=a0.device).reshape(1, 1, 4, 1),
        )

    def _forward(self, model: Model, consts: KinematicConstants, q: Tensor):
        """One frames-last FK pass at ``q (T, C)``: world poses ``Hw (B, 3, 4, T)`` (level order),
        the marker bodies' poses ``Hm (M, 3, 4, T)``, marker positions ``p (M, 3, T)`` and what
        the Jacobian reuses (slot values ``v (B * 6, T)``, slot and coupler derivatives, ``vT``:
        the slot values as ``(B, 6, T)``)."""
        topo = self.topology
        B = topo.n_bodies
        T = q.shape[0]
        # joint functions and couplers, frames-last: values and derivatives in one pass each
        qT = q.t()
        full, cders = qT, []
        if topo.dependent_names:
            cv = []
            for g, prm, cf, inp in zip(topo.coupler_groups, model.coupler_params, consts.coupler_coeffs, self.coupler_inputs):
                val, der = F.value_and_derivative(g.key, prm, qT.index_select(0, inp).t(), cf)
                cv.append(val.t())
                cders.append(der.t())
            full = torch.cat([qT, torch.cat(cv, 0).index_select(0, self.dep_where)], 0)
        vals, ders = [], []
        for unit, cf, inp in zip(self.slot_units, consts.slot_coeffs, self.slot_inputs):
            key, prm = topo.slot_groups[unit[0]].key, model.slot_params[unit[0]]  # (a spline unit: cf has them all)
            val, der = F.value_and_derivative(key, prm, full.index_select(0, inp).t(), cf)
            vals.append(val.t())
            ders.append(der.t())
        v = torch.cat(vals + [q.new_zeros(1, T)], 0).index_select(0, self.slot_where) + consts.v_const  # (B * 6, T)
        vT = v.reshape(B, 6, T)  # level order
        # local rotations: varying factors from their angles (constant slots absorbed), multiplied
        # for bodies with several; constant for the rest
        ang = v.index_select(0, self.rot_var_col)[:, None, None]  # (V, 1, 1, T)
        E0, E1, E2 = consts.Ev
        Rv = E0 + torch.sin(ang) * E1 + (1.0 - torch.cos(ang)) * E2  # (V, 3, 3, T)
        n1, n2, n3 = self.n_factors
        R, at = Rv[:n1], n1
        for n in (n2, n3):
            if n:
                R = torch.cat((_mm(R[:n], Rv[at : at + n]), R[n:]), 0)
                at += n
        if consts.Rconst.shape[0]:
            R = torch.cat((R, consts.Rconst.expand(-1, -1, -1, T)), 0)
        R_loc = R if self.rloc_order is None else R.index_select(0, self.rloc_order)  # (B, 3, 3, T)
        t_loc = (consts.G * vT[:, 3:, None, :]).sum(1) + consts.tp - (R_loc * consts.tc).sum(2)
        # local poses as 4 x 4 [[R, t], [0, 1]] so that composing is one product per level
        H_loc = torch.cat((torch.cat((R_loc, t_loc[:, :, None]), 2), consts.h_row.expand(B, 1, 4, T)), 1)
        # compose down the tree: world pose [R | t] (3 x 4) of a level = parents' (level above) o local
        Hs = []
        for start, n, par in self.levels:
            Hl = H_loc[start : start + n]
            if par is None:
                Hs.append(Hl[:, :3])
                continue
            Hp = Hs[-1][par : par + 1] if isinstance(par, int) else Hs[-1].index_select(0, par)
            Hs.append((Hp[:, :, :, None, :] * Hl[:, None]).sum(2))  # (n, 3, 4, T)
        Hw = torch.cat(Hs, 0)  # (B, 3, 4, T), level order
        Hm = Hw.index_select(0, self.marker_pos)  # (M, 3, 4, T)
        p = (Hm * consts.off).sum(2)  # (M, 3, T)
        return Hw, Hm, p, (v, ders, cders, vT)

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
        return _with_ground(Rw).index_select(0, self.par_index)

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
    """The tensor-free part of a :class:`JacobianPlan` (per topology and columns): every index
    table as one buffer of int64 (``layout``: name and shape of each part, ``sizes``: their
    lengths), the 0/1 matrices as the positions of their ones, and the plain fields."""

    topology: Any
    columns: tuple
    levels: tuple  # (start, size, parent position (int), None or "tensor" (part level_par:k))
    slot_units: tuple
    n_factors: tuple
    n_coupler_groups: int
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
    the columns alone."""
    C, B = topo.n_coordinates, topo.n_bodies
    col_of = {c: k for k, c in enumerate(columns)}
    parts: list = []  # (name, shape, values)
    absent: list = []

    def lt(name, values, shape=None):
        values = [int(v) for v in values]
        parts.append((name, (len(values),) if shape is None else shape, values))

    def opt(name, values, identity):
        values = list(values)
        if values == identity:
            absent.append(name)
        else:
            lt(name, values)

    # tree levels: bodies stored level by level; parents of level k lie in level k - 1
    sched = topo.schedule
    order = list(sched.order)
    pos = dict(enumerate(sched.position))
    levels = []
    for k, bodies in enumerate(sched.levels):
        par = None
        if k:
            rel = sched.parent_in_level[k]
            if len(set(rel)) == 1:
                par = rel[0]
            else:
                par = "tensor"
                lt(f"level_par:{k}", rel)
        levels.append((sched.level_start[k], len(bodies), par))
    # coupler outputs: dependent d <- (its coordinate, its column among coupler values)
    dep_src: dict[int, tuple[int, int]] = {}
    col = 0
    for g in topo.coupler_groups:
        for o, i in zip(g.outputs, g.inputs):
            dep_src[o] = (i, col)
            col += 1
    n_dep = col
    # entries: (level-order flat slot, coordinate column, slot-derivative column, coupler column)
    # evaluation units: each non-constant, non-spline group alone; all spline groups together
    # (their tables padded to one knot count: one lookup for every spline)
    kinds = [g.key[0] for g in topo.slot_groups]
    units = [(k,) for k, kind in enumerate(kinds) if kind not in (F.FnKind.CONSTANT, F.FnKind.SPLINE)]
    splines = tuple(k for k, kind in enumerate(kinds) if kind is F.FnKind.SPLINE)
    units += [splines] if splines else []
    entries, where, col = [], [None] * (B * 6), 0
    for u, unit in enumerate(units):
        gs = [topo.slot_groups[k] for k in unit]
        lt(f"slot_inputs:{u}", [i for g in gs for i in g.inputs])
        for o, i in ((o, i) for g in gs for o, i in zip(g.outputs, g.inputs)):
            flat = pos[o // 6] * 6 + o % 6
            where[flat] = col
            coord, dcol = (i, n_dep) if i < C else dep_src[i - C]
            if coord in col_of:
                entries.append((flat, col_of[coord], col, dcol))
            col += 1
    varying = [f for f in range(B * 6) if where[f] is not None and f % 6 < 3]
    where = [col if w is None else w for w in where]
    # rotation factors: each body's varying slots, with the constant slot factors around
    # them absorbed (constants); products only for bodies with more than one
    vs = [[f % 6 for f in varying if f // 6 == b] for b in range(B)]
    vb = sorted((b for b in range(B) if vs[b]), key=lambda b: -len(vs[b]))
    cb = [b for b in range(B) if not vs[b]]
    ident = B * 3  # row of the identity after the B * 3 constant slot factors
    factors, pre, post = [], [], []
    for i in range(3):
        for b in vb:
            if len(vs[b]) > i:
                k, nxt = vs[b][i], (vs[b][i + 1] if i + 1 < len(vs[b]) else 3)
                factors.append((b, k))
                before = [b * 3 + j for j in range(k)] if i == 0 else []
                after = [b * 3 + j for j in range(k + 1, nxt)]
                pre.append(before + [ident] * (2 - len(before)))
                post.append(after + [ident] * (2 - len(after)))
    n_factors = tuple(sum(1 for b in vb if len(vs[b]) > i) for i in range(3))
    row_of = {b: j for j, b in enumerate(vb + cb)}
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
    turning = any(o % 6 == 1 and 0 in vs[o // 6] for o, _, _, _ in rot)
    gm = [(i, m) for i, b in enumerate(gbodies) for m, ch in enumerate(marker_chains) if b in ch]
    lt("order", order)
    opt("order_inv", [pos[b] for b in range(B)], list(range(B)))
    lt("slot_where", where)
    lt("rot_var", [b * 3 + k for b, k in factors])
    lt("rot_var_col", [b * 6 + k for b, k in factors])
    lt("fac_pre", [x for r in pre for x in r], (len(pre), 2))
    lt("fac_post", [x for r in post for x in r], (len(post), 2))
    lt("const_slots", [b * 3 + k for b in cb for k in range(3)], (len(cb), 3))
    opt("rloc_order", [row_of[b] for b in range(B)], list(range(B)))
    for k, g in enumerate(topo.coupler_groups):
        lt(f"coupler_inputs:{k}", g.inputs)
    lt("dep_where", [dep_src[d][1] for d in range(n_dep)])
    lt("par_index", par_row)
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
    lt("marker_pos", [pos[b] for b in topo.marker_bodies])
    lt("cross_index", [1, 2, 0, 2, 0, 1], (2, 3))
    flat = [v for _, _, vals in parts for v in vals]
    return _PlanTables(
        topology=topo,
        columns=tuple(columns),
        levels=tuple(levels),
        slot_units=tuple(units),
        n_factors=n_factors,
        n_coupler_groups=len(topo.coupler_groups),
        n_marker_bodies=len(mbodies),
        S_shape=(Cf * len(mbodies), len(ents)),
        grp_markers_shape=(len(gbodies), len(marker_chains)),
        absent=tuple(absent),
        layout=tuple((name, shape) for name, shape, _ in parts),
        sizes=tuple(len(vals) for _, _, vals in parts),
        buffer=array.array("q", flat).tobytes(),
    )
