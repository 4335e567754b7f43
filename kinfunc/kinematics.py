"""Frames-last forward kinematics: the one encoding of a joint behind the compiled FK's leaves
form (:func:`kinfunc.compile_fk`, :func:`kinfunc.compiled.fk_soa`) and the IK Jacobian
(:class:`kinfunc.ik.jacobian.JacobianPlan`).

Three steps, each a value handed to the next (nothing is cached on a model or keyed on object
identity):

1. :class:`KinematicPlan` (:meth:`KinematicPlan.build`): index tensors worked out once per
   :class:`~kinfunc.Topology` in plain Python (:func:`plan_tables`, cached per topology as
   bytes, no tensors) and made on a device in microseconds. Bodies are stored *by tree level*
   ("level order"), so each level is a contiguous slice composed with its parents (the level
   above) by one product.
2. :func:`joint_constants` (``(plan, leaves) -> JointConstants``): everything that does not
   depend on ``q`` -- each varying rotation slot's factor ``E0 + sin(v) E1 + (1 - cos(v)) E2``
   with the joint frames and the constant slots around it absorbed, the constant local
   rotations, translation axes scaled by OpenSim's rule (:func:`kinfunc.fk.translation_factors`),
   scaled frame locations and marker offsets, spline tables. Differentiable in every leaf.
3. :func:`forward` (``(plan, constants, qT (C, T)) -> Forward``): joint functions (values and
   closed-form derivatives), local poses, composition down the tree (a ``3 x 4`` product per
   level, rotations and origins separately, or the ``kinfunc::compose_chain`` custom op),
   marker positions. Frames are the last
   (contiguous) axis, so every ``3 x 3`` product is elementwise over frames.

:func:`kinfunc.fk` (frames first, :func:`kinfunc.fk.local_transforms`) is the reference these are
tested against; the frozen forms of :mod:`kinfunc.compiled` bake a model's values into
generated code instead.
"""

from __future__ import annotations

import array
import functools
from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor

from . import functions as F
from . import transforms as tf
from .fk import translation_factors
from .model import Model, Topology

__all__ = ["KinematicPlan", "ModelLeaves", "JointFrames", "JointConstants", "JointFactors", "Forward",
           "joint_constants", "joint_parts", "marker_rows", "plan_tables", "forward", "world_poses"]


class ModelLeaves(NamedTuple):
    """The tensors of a :class:`~kinfunc.Model` the kinematics read (model body order): joint
    frames ``parent_location``, ``parent_orientation``, ``child_location``,
    ``child_orientation (B, 3)``, slot ``axes (B, 6, 3)``, ``slot_params`` / ``coupler_params``
    (per function group), ``marker_offsets (M, 3)``, ``body_scales (B, 3)``, ``global_scale ()``.
    A plain tuple of tensors, so it can be an argument of compiled code."""

    parent_location: Tensor
    parent_orientation: Tensor
    child_location: Tensor
    child_orientation: Tensor
    axes: Tensor
    slot_params: tuple
    coupler_params: tuple
    marker_offsets: Tensor
    body_scales: Tensor
    global_scale: Tensor

    @classmethod
    def of(cls, model: Model) -> "ModelLeaves":
        return cls(*(getattr(model, f) for f in cls._fields))


class JointFrames(NamedTuple):
    """A model's joint frames, model body order: unit slot axes ``axes (B, 6, 3)``, parent-side
    and child-side frame orientations ``Rp``, ``Rc (B, 3, 3)``."""

    axes: Tensor
    Rp: Tensor
    Rc: Tensor

    @classmethod
    def of(cls, model) -> "JointFrames":
        """From a :class:`~kinfunc.Model` or :class:`ModelLeaves`."""
        axes = model.axes / torch.linalg.vector_norm(model.axes, dim=-1, keepdim=True)
        R = tf.euler_xyz_to_matrix(torch.stack((model.parent_orientation, model.child_orientation)))
        return cls(axes, R[0], R[1])


class _Tables(NamedTuple):
    """The tensor-free part of a :class:`KinematicPlan` (per topology): every index table as one
    buffer of int64 (``layout``: name and shape of each part, ``sizes``: their lengths) and the
    plain fields."""

    topology: Any
    levels: tuple  # (start, size, parent position (int), None, or "tensor" (part level_par:k))
    slot_units: tuple
    n_factors: tuple
    position: tuple  # level position of each body
    first_varies: tuple  # level positions of the bodies whose first rotation slot varies
    absent: tuple  # optional index tables that are None (identity)
    layout: tuple  # ((name, shape), ...)
    sizes: tuple
    buffer: bytes


@functools.lru_cache(maxsize=64)  # plain Python values only (no tensors)
def plan_tables(topo: Topology) -> _Tables:
    """What :class:`KinematicPlan` holds (its fields' comments), worked out from the topology."""
    B = topo.n_bodies
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
    # coupler outputs: dependent d <- its column among the coupler values
    dep_col: dict[int, int] = {}
    col = 0
    for g in topo.coupler_groups:
        for o in g.outputs:
            dep_col[o] = col
            col += 1
    # evaluation units: each non-constant, non-spline group alone; all spline groups together
    # (their tables padded to one knot count: one lookup for every spline)
    kinds = [g.key[0] for g in topo.slot_groups]
    units = [(k,) for k, kind in enumerate(kinds) if kind not in (F.FnKind.CONSTANT, F.FnKind.SPLINE)]
    splines = tuple(k for k, kind in enumerate(kinds) if kind is F.FnKind.SPLINE)
    units += [splines] if splines else []
    where, col = [None] * (B * 6), 0
    for u, unit in enumerate(units):
        gs = [topo.slot_groups[k] for k in unit]
        lt(f"slot_inputs:{u}", [i for g in gs for i in g.inputs])
        for o in (o for g in gs for o in g.outputs):
            where[pos[o // 6] * 6 + o % 6] = col
            col += 1
    varying = [f for f in range(B * 6) if where[f] is not None and f % 6 < 3]
    where = [col if w is None else w for w in where]
    # rotation factors: each body's varying slots, with the constant slot factors around them
    # absorbed (constants); products only for bodies with more than one
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
    lt("dep_where", [dep_col[d] for d in range(len(dep_col))])
    lt("par_index", [pos[topo.parents[b]] + 1 if topo.parents[b] >= 0 else 0 for b in order])
    lt("marker_pos", [pos[b] for b in topo.marker_bodies])
    flat = [v for _, _, vals in parts for v in vals]
    return _Tables(
        topology=topo,
        levels=tuple(levels),
        slot_units=tuple(units),
        n_factors=n_factors,
        position=tuple(pos[b] for b in range(B)),
        first_varies=tuple(b for b, k in factors if k == 0),
        absent=tuple(absent),
        layout=tuple((name, shape) for name, shape, _ in parts),
        sizes=tuple(len(vals) for _, _, vals in parts),
        buffer=array.array("q", flat).tobytes(),
    )


class KinematicPlan(NamedTuple):
    """Index tensors of a topology's frames-last kinematics on one device (:meth:`build`).
    Bodies are in *level order* (tree level by level; ``order``/``order_inv`` map to and from
    model order). A plain tuple (static fields and tensors), so compiled code can take it apart
    and put it together (:meth:`parts`, :meth:`assemble`)."""

    topology: Any
    levels: tuple  # per tree level: (start, size, parent positions in the level above (LongTensor), an int if one parent, None for the roots)
    slot_units: tuple  # slot groups evaluated together: each non-constant non-spline group, then all spline groups
    n_factors: tuple  # (N1, N2, N3): bodies with at least 1, 2, 3 varying rotation slots; factor order = their 1st, 2nd, 3rd varying slots (bodies by count, most first)
    position: tuple  # (B,) ints: level position of each body
    first_varies: tuple  # level positions of the bodies whose first rotation slot varies
    order: Tensor  # (B,) long: body at each level-order position
    order_inv: Optional[Tensor]  # (B,) long: level position of each body (None if identity)
    slot_inputs: tuple  # per unit: LongTensor of its inputs into [q, dependents]
    slot_where: Tensor  # (B * 6,) long: level-order flat slot -> column of cat(unit values..., 0)
    rot_var: Tensor  # (V,) long: position * 3 + slot of each varying rotation slot (driven by a non-constant function), factor order
    rot_var_col: Tensor  # (V,) long: its row in the slot values (position * 6 + slot)
    fac_pre: Tensor  # (V, 2) long: constant slot factors absorbed before each varying factor (rows of [Rk0; I])
    fac_post: Tensor  # (V, 2) long: ... and after it
    const_slots: Tensor  # (nc, 3) long: the three slot factors of each body without varying rotation slots
    rloc_order: Optional[Tensor]  # (B,) long: level position -> row of [varying bodies (by count); constant bodies] (None if identity)
    coupler_inputs: tuple  # per coupler group: LongTensor of its inputs into q
    dep_where: Tensor  # (D,) long: dependent -> column of cat(coupler values...)
    par_index: Tensor  # (B,) long: parent position + 1 (0 = ground) into [identity, world]
    marker_pos: Tensor  # (M,) long: level position of each marker's body

    @classmethod
    def build(cls, topology: Topology, device: torch.device | str = "cpu") -> "KinematicPlan":
        """The plan of ``topology`` with its index tensors on ``device`` (one buffer, split)."""
        return cls.assemble(plan_tables(topology), cls.parts(topology, device))

    @staticmethod
    def parts(topology: Topology, device: torch.device | str = "cpu") -> tuple[Tensor, ...]:
        """The plan's index tensors as one flat tuple (what compiled code takes as arguments)."""
        tables = plan_tables(topology)
        with torch.inference_mode(False):  # ordinary tensors, whatever the caller's mode
            flat = torch.frombuffer(bytearray(tables.buffer), dtype=torch.long)
            if torch.device(device).type != "cpu":
                flat = flat.to(device)
            return tuple(flat.split(tables.sizes))

    @classmethod
    def assemble(cls, tables: _Tables, parts: tuple[Tensor, ...]) -> "KinematicPlan":
        """The plan from its static ``tables`` and :meth:`parts` (plain Python: traceable)."""
        t = {name: p if len(shape) == 1 else p.view(shape) for (name, shape), p in zip(tables.layout, parts)}
        levels = tuple((a, n, t.pop(f"level_par:{k}") if par == "tensor" else par) for k, (a, n, par) in enumerate(tables.levels))
        slot_inputs = tuple(t.pop(f"slot_inputs:{k}") for k in range(len(tables.slot_units)))
        coupler_inputs = tuple(t.pop(f"coupler_inputs:{k}") for k in range(len(tables.topology.coupler_groups)))
        for name in tables.absent:
            t[name] = None
        return cls(
            topology=tables.topology, levels=levels, slot_units=tables.slot_units, n_factors=tables.n_factors,
            position=tables.position, first_varies=tables.first_varies, slot_inputs=slot_inputs,
            coupler_inputs=coupler_inputs, **t,
        )


class JointConstants(NamedTuple):
    """What :func:`forward` needs from a model's leaves (:func:`joint_constants`). Body-indexed
    tensors are in level order; trailing axes of size 1 broadcast over frames."""

    slot_coeffs: tuple  # per evaluation unit: kinfunc.functions.coefficients (spline units: stack_tables)
    coupler_coeffs: tuple  # per coupler group
    v_const: Tensor  # (B * 6, 1): values of slots driven by constant functions (0 elsewhere)
    Ev: Tensor  # (3 terms, V, 3, 3, 1): varying rotation factors (constant neighbours absorbed) = Ev0 + sin(v) Ev1 + (1 - cos(v)) Ev2
    Rconst: Tensor  # (nc, 3, 3, 1): local rotation of each body without varying rotation slots
    G: Tensor  # (B, 3, 3, 1): scaled translation axis k in the parent body frame
    tp: Tensor  # (B, 3, 1): parent-side frame location (scaled)
    tc: Tensor  # (B, 1, 3, 1): child-side frame location (scaled), as a row
    off: Tensor  # (M, 1, 4, 1): scaled marker offsets, homogeneous, as rows
    h_row: Tensor  # (1, 1, 4, 1): the last row [0, 0, 0, 1] of a 4 x 4 pose


class JointFactors(NamedTuple):
    """Intermediate values of :func:`joint_parts` that the Jacobian derives its axes from:
    ``Ef (B * 3, 3 terms, 3, 3)`` each slot's rotation factor ``Ef0 + sin(v) Ef1 + (1 - cos(v))
    Ef2`` (joint frames included; level order, flat ``position * 3 + slot``), ``Rk0 (B * 3, 3,
    3)`` the factors at the slots' constant values, ``Gu (B, 3, 3)`` the unit translation axes in
    the parent body frame (model order)."""

    Ef: Tensor
    Rk0: Tensor
    Gu: Tensor


def marker_rows(plan: KinematicPlan, leaves) -> Tensor:
    """Scaled marker offsets, homogeneous, as rows ``(M, 1, 4, 1)`` (:attr:`JointConstants.off`);
    ``leaves``: a :class:`~kinfunc.Model` or :class:`ModelLeaves`."""
    off = leaves.marker_offsets * (leaves.global_scale * leaves.body_scales)[list(plan.topology.marker_bodies)]
    return torch.cat((off, torch.ones_like(off[:, :1])), -1)[:, None, :, None]


def joint_parts(plan: KinematicPlan, leaves, frames: Optional[JointFrames] = None) -> tuple[JointConstants, JointFactors]:
    """:func:`joint_constants` and the :class:`JointFactors` they were made from. ``leaves``: a
    :class:`~kinfunc.Model` or :class:`ModelLeaves`; ``frames``: its :class:`JointFrames` if
    already computed."""
    topo = plan.topology
    B = topo.n_bodies
    o = plan.order
    dt, dev = leaves.axes.dtype, leaves.axes.device
    s_body = leaves.global_scale * leaves.body_scales  # (B, 3)
    s_parent = torch.cat((torch.ones_like(s_body[:1]), s_body), 0)[[p + 1 for p in topo.parents]]
    axes, Rp, Rc = frames if frames is not None else JointFrames.of(leaves)
    K = tf.skew(axes[:, :3])  # (B, 3, 3, 3)
    K2 = K @ K
    RcT = Rc.transpose(-1, -2)
    eye = torch.eye(3, dtype=dt, device=dev).expand_as(Rp)
    # slot k's factor: Rp R_0 (1st slot), R_1, R_2 Rc^T (3rd): Rodrigues' three terms
    E = torch.stack(
        (
            torch.stack((Rp, Rp @ K[:, 0], Rp @ K2[:, 0]), 1),
            torch.stack((eye, K[:, 1], K2[:, 1]), 1),
            torch.stack((RcT, K[:, 2] @ RcT, K2[:, 2] @ RcT), 1),
        ),
        1,
    )  # (B, 3 slots, 3 terms, 3, 3)
    s_tr = translation_factors(leaves.axes, s_parent, topo.unscaled_slots)  # OpenSim's rule, (B, 3)
    Gu = (Rp[:, None] @ axes[:, 3:, :, None])[..., 0]  # (B, 3, 3): unit translation axes, parent frame
    v_const = torch.zeros(B * 6, dtype=dt, device=dev)
    for g, p in zip(topo.slot_groups, leaves.slot_params):
        if g.key[0] is F.FnKind.CONSTANT:
            flat = [plan.position[k // 6] * 6 + k % 6 for k in g.outputs]
            v_const = v_const.index_add(0, torch.tensor(flat, device=dev), p[0])
    vc = v_const.reshape(-1, 6)[:, :3].reshape(-1)[..., None, None]  # (B * 3, 1, 1) level order
    Ef = E.index_select(0, o).reshape(-1, 3, 3, 3)
    Rk0 = Ef[:, 0] + torch.sin(vc) * Ef[:, 1] + (1.0 - torch.cos(vc)) * Ef[:, 2]  # every slot at its constant value
    CT = torch.cat((Rk0, eye[:1]), 0)  # ... and the identity
    pre = CT[plan.fac_pre[:, 0]] @ CT[plan.fac_pre[:, 1]]
    post = CT[plan.fac_post[:, 0]] @ CT[plan.fac_post[:, 1]]
    cs = plan.const_slots
    slot_groups = topo.slot_groups
    consts = JointConstants(
        slot_coeffs=tuple(
            F.stack_tables([F.coefficients(slot_groups[k].key, leaves.slot_params[k]) for k in unit]) for unit in plan.slot_units
        ),
        coupler_coeffs=tuple(F.coefficients(g.key, p) for g, p in zip(topo.coupler_groups, leaves.coupler_params)),
        v_const=v_const[:, None],
        Ev=(pre[:, None] @ Ef.index_select(0, plan.rot_var) @ post[:, None]).transpose(0, 1)[..., None],
        Rconst=(CT[cs[:, 0]] @ CT[cs[:, 1]] @ CT[cs[:, 2]])[..., None],
        G=(Gu * s_tr[..., None]).index_select(0, o)[..., None],
        tp=(leaves.parent_location * s_parent).index_select(0, o)[..., None],
        tc=(leaves.child_location * s_body).index_select(0, o)[:, None, :, None],
        off=marker_rows(plan, leaves),
        h_row=torch.eye(4, dtype=dt, device=dev)[3:].reshape(1, 1, 4, 1),
    )
    return consts, JointFactors(Ef, Rk0, Gu)


def joint_constants(plan: KinematicPlan, leaves, frames: Optional[JointFrames] = None) -> JointConstants:
    """Everything :func:`forward` needs that does not depend on ``q`` (:class:`JointConstants`),
    from a :class:`~kinfunc.Model` or :class:`ModelLeaves` (differentiable in every leaf)."""
    return joint_parts(plan, leaves, frames)[0]


class Forward(NamedTuple):
    """Output of :func:`forward` for ``T`` frames (level order): world rotations ``R (B, 3, 3,
    T)`` and origins ``t (B, 3, T)``, marker positions ``p (M, 3, T)``, slot values ``v (B * 6,
    T)``, the derivatives of the joint functions and couplers w.r.t. their inputs (lists: per
    evaluation unit ``(n, T)``, per coupler group ``(n, T)``) and, when composed homogeneously,
    the world poses ``Hw (B, 3, 4, T)`` (``[R | t]``; ``R``, ``t`` are its views) and the marker
    bodies' poses ``Hm (M, 3, 4, T)`` (else None)."""

    R: Tensor
    t: Tensor
    p: Tensor
    v: Tensor
    ders: list
    cders: list
    Hw: Optional[Tensor]
    Hm: Optional[Tensor]


def _mm(A: Tensor, B: Tensor) -> Tensor:
    """Product of 3 x 3 matrices stored frames-last: ``(..., 3, 3, T) @ (..., 3, 3, T)``."""
    return (A[..., :, :, None, :] * B[..., None, :, :, :]).sum(-3)


def forward(plan: KinematicPlan, consts, qT: Tensor, chain_op=None, homogeneous: bool = True) -> Forward:
    """One frames-last FK pass at ``qT (C, T)`` (rad / m, frames last) -> :class:`Forward`.

    ``consts``: :func:`joint_constants` of the model (or any value with their fields, e.g. the
    IK's :class:`~kinfunc.ik.jacobian.KinematicConstants`). Composition down the tree:
    ``homogeneous`` (default): ``3 x 4`` poses, one product per level (fewest eager ops: the IK);
    else rotations and origins separately (:func:`world_poses`: under autograd, a loss that
    depends on the leaves through translations only does not differentiate the rotations; the
    compiled leaves form), or through ``chain_op``, the ``kinfunc::compose_chain`` custom op
    (:func:`kinfunc.kernels.chain.chain_op`: the Triton kernel on CUDA)."""
    topo = plan.topology
    B = topo.n_bodies
    T = qT.shape[1]
    # joint functions and couplers, frames-last: values and derivatives in one pass each
    full, cders = qT, []
    if topo.dependent_names:
        cv = []
        for g, cf, inp in zip(topo.coupler_groups, consts.coupler_coeffs, plan.coupler_inputs):
            val, der = F.value_and_derivative(g.key, cf, qT.index_select(0, inp).t(), cf)
            cv.append(val.t())
            cders.append(der.t())
        full = torch.cat([qT, torch.cat(cv, 0).index_select(0, plan.dep_where)], 0)
    vals, ders = [], []
    for unit, cf, inp in zip(plan.slot_units, consts.slot_coeffs, plan.slot_inputs):
        # (a spline unit: cf holds every group's table; other kinds' coefficients are their parameters)
        val, der = F.value_and_derivative(topo.slot_groups[unit[0]].key, cf, full.index_select(0, inp).t(), cf)
        vals.append(val.t())
        ders.append(der.t())
    v = torch.cat(vals + [qT.new_zeros(1, T)], 0).index_select(0, plan.slot_where) + consts.v_const  # (B * 6, T)
    vT = v.reshape(B, 6, T)  # level order
    # local rotations: varying factors from their angles (constant slots absorbed), multiplied
    # for bodies with several; constant for the rest
    ang = v.index_select(0, plan.rot_var_col)[:, None, None]  # (V, 1, 1, T)
    E0, E1, E2 = consts.Ev
    Rv = E0 + torch.sin(ang) * E1 + (1.0 - torch.cos(ang)) * E2  # (V, 3, 3, T)
    n1, n2, n3 = plan.n_factors
    R, at = Rv[:n1], n1
    for n in (n2, n3):
        if n:
            R = torch.cat((_mm(R[:n], Rv[at : at + n]), R[n:]), 0)
            at += n
    if consts.Rconst.shape[0]:
        R = torch.cat((R, consts.Rconst.expand(-1, -1, -1, T)), 0)
    R_loc = R if plan.rloc_order is None else R.index_select(0, plan.rloc_order)  # (B, 3, 3, T)
    t_loc = (consts.G * vT[:, 3:, None, :]).sum(1) + consts.tp - (R_loc * consts.tc).sum(2)  # (B, 3, T)
    if homogeneous and chain_op is None:
        # local poses as 4 x 4 [[R, t], [0, 1]] so that composing is one product per level
        H_loc = torch.cat((torch.cat((R_loc, t_loc[:, :, None]), 2), consts.h_row.expand(B, 1, 4, T)), 1)
        Hs = []  # world pose [R | t] (3 x 4) of a level = parents' (level above) o local
        for start, n, par in plan.levels:
            Hl = H_loc[start : start + n]
            if par is None:
                Hs.append(Hl[:, :3])
                continue
            Hp = Hs[-1][par : par + 1] if isinstance(par, int) else Hs[-1].index_select(0, par)
            Hs.append((Hp[:, :, :, None, :] * Hl[:, None]).sum(2))  # (n, 3, 4, T)
        Hw = torch.cat(Hs, 0)  # (B, 3, 4, T)
        Hm = Hw.index_select(0, plan.marker_pos)  # (M, 3, 4, T)
        return Forward(Hw[:, :, :3], Hw[:, :, 3], (Hm * consts.off).sum(2), v, ders, cders, Hw, Hm)
    Rw, tw = world_poses(plan, R_loc, t_loc, chain_op)
    mp = plan.marker_pos
    p = (Rw.index_select(0, mp) * consts.off[:, :, :3]).sum(2) + tw.index_select(0, mp)
    return Forward(Rw, tw, p, v, ders, cders, None, None)


def world_poses(plan: KinematicPlan, R_loc: Tensor, t_loc: Tensor, chain_op=None) -> tuple[Tensor, Tensor]:
    """Compose local poses ``R_loc (B, 3, 3, T)``, ``t_loc (B, 3, T)`` (level order) down the
    tree -> world ``R (B, 3, 3, T)``, ``t (B, 3, T)`` (level order), one level at a time or by
    ``chain_op`` (see :func:`forward`)."""
    if chain_op is not None:  # the custom op composes batch-first, model order
        inv = plan.order_inv
        Rm, tm = (R_loc, t_loc) if inv is None else (R_loc.index_select(0, inv), t_loc.index_select(0, inv))
        R, t = chain_op(list(plan.topology.parents), Rm.permute(3, 0, 1, 2).contiguous(), tm.permute(2, 0, 1).contiguous())
        R, t = R.permute(1, 2, 3, 0), t.permute(1, 2, 0)
        return (R, t) if inv is None else (R.index_select(0, plan.order), t.index_select(0, plan.order))
    Rs, ts = [], []
    for start, n, par in plan.levels:
        Rl, tl = R_loc[start : start + n], t_loc[start : start + n]
        if par is not None:  # parents lie in the level above
            Rp, tp = (Rs[-1][par : par + 1], ts[-1][par : par + 1]) if isinstance(par, int) else (
                Rs[-1].index_select(0, par), ts[-1].index_select(0, par))
            Rl, tl = _mm(Rp, Rl), (Rp * tl[:, None]).sum(2) + tp
        Rs.append(Rl)
        ts.append(tl)
    return torch.cat(Rs, 0), torch.cat(ts, 0)
