"""Compiled, structure-of-arrays forward kinematics: :func:`compile_fk`.

The reference :func:`kinfunc.fk` is written for clarity and for every ``torch.func``
transform; it builds small ``3 x 3`` products batch-first, which CPU backends run slowly at
large batch. This module computes the *same* function in layouts a compiler can fuse:

* frames last (structure of arrays): ``q (..., C)`` is viewed as ``C`` rows of ``N`` frames
  and every output entry is a row ``(N,)``;
* **frozen form** (default when no model leaf requires grad): the model's geometry is baked in
  as Python floats and the tree is unrolled into straight-line row arithmetic; exact zeros and
  ones are folded while tracing, so a structurally-zero slot, an identity joint frame or a
  coordinate axis cost nothing and a pin about a coordinate axis is one ``sin``/``cos`` pair
  and four products. Inductor fuses the whole tree into one vectorised loop over frames.
  Gradients flow to ``q``;
* **leaves form** (default when a model leaf requires grad): model tensors are arguments of
  the compiled code (cached per ``(topology, dtype, device)``, no recompile for a changed
  model, gradients to every leaf), vectorised over bodies; slower, ``dynamic=False`` only;
* **lean single frame**: for one unbatched frame without grad on CPU, the frozen row algebra
  is generated once as straight-line Python over floats (no tensor ops, no kernel launch).

Outputs are views of frames-last buffers, ``R (B, 3, 3, N)`` and ``t (B, 3, N)``, permuted to
the public layout ``(..., B, 3, 3)``: values equal :func:`kinfunc.fk`, but the strides differ
(call ``.contiguous()`` if a consumer needs a dense batch-first tensor; that copy costs
about as much as the FK itself at large batch). :meth:`CompiledFK.frames_last` returns the
raw buffers.

Warm-up: the first call for a topology/dtype/device (and, frozen, model values) traces and
compiles: 30-100 s on this shared 2-core CPU for the 18-DOF lower body (inductor's on-disk
cache makes later processes faster); the backward is compiled on the first backward call.
Inside ``torch.func`` transforms (``vmap``, ``grad``, ``jacrev``, ``jacfwd``) the
uncompiled structure-of-arrays function runs, so results and derivatives are identical.
"""
from __future__ import annotations

import dataclasses
import math
import threading
from typing import Callable, NamedTuple, Optional, Union

import torch
from torch import Tensor

from . import functions as F
from . import transforms as tf
from .fk import Poses, translation_factors, translation_scales
from .model import Model, Topology

__all__ = ["compile_fk", "CompiledFK", "fk_soa", "clear_compile_cache"]

# ----------------------------------------------------------------------------------------
# Static plan (pure Python; hashable; derived from the topology only)


@dataclasses.dataclass(frozen=True)
class _Plan:
    parents: tuple[int, ...]
    n_coords: int
    n_dep: int
    slot_groups: tuple  # FnGroup
    coupler_groups: tuple
    n_values: int  # rows of the concatenated slot-function values; row n_values is a zero row
    # rotation stage j: bodies whose joint has a j-th present rotation, its slot and value row
    rot_stages: tuple[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]
    # bodies with a translation slot, and per translation slot (3) the value row for each
    trans_bodies: tuple[int, ...]
    trans_rows: tuple[tuple[int, ...], ...]
    # per depth level: bodies, and each one's parent position within the previous level
    levels: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    out_perm: tuple[int, ...]  # body b's row in the level-ordered concatenation
    marker_bodies: tuple[int, ...]
    unscaled_slots: tuple[int, ...]  # translation slots the parent's scale leaves alone


def _plan(topo: Topology) -> _Plan:
    B = topo.n_bodies
    row: dict[tuple[int, int], int] = {}
    n = 0
    for grp in topo.slot_groups:
        for out in grp.outputs:
            row[(out // 6, out % 6)] = n
            n += 1
    stages: list[tuple[list[int], list[int], list[int]]] = []
    for b in range(B):
        present = [s for s in range(3) if (b, s) in row]
        for j, s in enumerate(present):
            if len(stages) <= j:
                stages.append(([], [], []))
            stages[j][0].append(b)
            stages[j][1].append(s)
            stages[j][2].append(row[(b, s)])
    trans_bodies = tuple(b for b in range(B) if any((b, s) in row for s in range(3, 6)))
    trans_rows = tuple(tuple(row.get((b, s), n) for b in trans_bodies) for s in range(3, 6))
    sched = topo.schedule
    levels = list(zip(sched.levels, sched.parent_in_level))
    perm = sched.position
    return _Plan(
        parents=topo.parents,
        n_coords=topo.n_coordinates,
        n_dep=len(topo.dependent_names),
        slot_groups=topo.slot_groups,
        coupler_groups=topo.coupler_groups,
        n_values=n,
        rot_stages=tuple((tuple(a), tuple(b), tuple(c)) for a, b, c in stages),
        trans_bodies=trans_bodies,
        trans_rows=trans_rows,
        levels=tuple(levels),
        out_perm=tuple(perm),
        marker_bodies=topo.marker_bodies,
        unscaled_slots=topo.unscaled_slots,
    )


# ----------------------------------------------------------------------------------------
# Frames-last algebra: R (n, 3, 3, N), t (n, 3, N); per-model constants carry N = 1.
# Products are written as three broadcast multiply-adds (pointwise, fusable), never matmul.


def _mm(A: Tensor, Bm: Tensor) -> Tensor:
    """``(n, 3, 3, *) @ (n, 3, 3, *)`` over the two middle axes."""
    return A[:, :, 0:1] * Bm[:, None, 0] + A[:, :, 1:2] * Bm[:, None, 1] + A[:, :, 2:3] * Bm[:, None, 2]


def _mv(A: Tensor, v: Tensor) -> Tensor:
    """``(n, 3, 3, *) @ (n, 3, *)``."""
    return A[:, :, 0] * v[:, 0:1] + A[:, :, 1] * v[:, 1:2] + A[:, :, 2] * v[:, 2:3]


def _eval_groups_soa(groups, params, U: Tensor) -> list[Tensor]:
    """Evaluate function groups on frames-last inputs ``U (n_in, N)`` -> per group ``(n, N)``."""
    out = []
    for g, p in zip(groups, params):
        kind = g.key[0]
        if kind is F.FnKind.CONSTANT:
            (value,) = p
            out.append(value[:, None] + torch.zeros_like(U[:1]))
            continue
        u = U[list(g.inputs)]  # (n, N)
        if kind is F.FnKind.LINEAR:
            slope, intercept = p
            out.append(slope[:, None] * u + intercept[:, None])
        elif kind is F.FnKind.POLYNOMIAL:
            (coef,) = p
            v = coef[:, 0, None] + torch.zeros_like(u)
            for k in range(1, coef.shape[1]):
                v = v * u + coef[:, k, None]
            out.append(v)
        else:  # spline: same algebra as functions.evaluate, knots on a middle axis
            xk, yk = p
            b, c, d = F.spline_coefficients(xk, yk, g.key[2])
            K = xk.shape[1]
            dx = u[:, None, :] - xk[:, :-1, None]  # (n, K-1, N)
            cubic = yk[:, :-1, None] + dx * (b[:, :-1, None] + dx * (c[:, :-1, None] + dx * d[:, :-1, None]))
            idx = (u[:, None, :] >= xk[:, 1:-1, None]).sum(1)  # (n, N)
            onehot = (idx[:, None, :] == torch.arange(K - 1, device=u.device)[None, :, None]).to(u.dtype)
            inside = (cubic * onehot).sum(1)
            below = yk[:, :1] + b[:, :1] * (u - xk[:, :1])
            above = yk[:, -1:] + b[:, -1:] * (u - xk[:, -1:])
            out.append(torch.where(u < xk[:, :1], below, torch.where(u > xk[:, -1:], above, inside)))
    return out


def _leaves(model: Model) -> tuple:
    return (
        model.parent_location,
        model.parent_orientation,
        model.child_location,
        model.child_orientation,
        model.axes,
        model.slot_params,
        model.coupler_params,
        model.marker_offsets,
        model.body_scales,
        model.global_scale,
    )


def _fk_soa_impl(plan: _Plan, leaves: tuple, qT: Tensor, with_markers: bool):
    """Frames-last FK core: ``qT (C, N)`` -> ``R (B, 3, 3, N)``, ``t (B, 3, N)``, markers ``(M, 3, N)``."""
    (p_loc, p_ori, c_loc, c_ori, axes, slot_params, coupler_params, m_off, b_scales, g_scale) = leaves
    B = len(plan.parents)
    N = qT.shape[1]
    dt, dev = qT.dtype, qT.device
    # --- per-model constants (tiny (B, ...) tensors, trailing frame axis of size 1)
    s_body = g_scale * b_scales  # (B, 3)
    s_all = torch.cat((torch.ones_like(s_body[:1]), s_body), 0)
    s_parent = s_all[[p + 1 for p in plan.parents]]
    unit = axes / torch.linalg.vector_norm(axes, dim=-1, keepdim=True)  # (B, 6, 3)
    Rp = tf.euler_xyz_to_matrix(p_ori)[..., None]  # (B, 3, 3, 1)
    RcT = tf.euler_xyz_to_matrix(c_ori).transpose(-1, -2)[..., None]
    tp = (p_loc * s_parent)[..., None]  # (B, 3, 1)
    tcinv = -_mv(RcT, (c_loc * s_body)[..., None])  # translation of T(child frame)^-1
    eye = torch.eye(3, dtype=dt, device=dev)[None, :, :, None]  # (1, 3, 3, 1)

    # --- function values of every non-zero slot, frames last: V (n_values + 1, N), last row 0
    U = qT
    if plan.n_dep:
        deps = torch.cat(_eval_groups_soa(plan.coupler_groups, coupler_params, qT), 0)
        order = [o for grp in plan.coupler_groups for o in grp.outputs]
        inv = [order.index(k) for k in range(plan.n_dep)]
        U = torch.cat((qT, deps[inv]), 0)
    vals = _eval_groups_soa(plan.slot_groups, slot_params, U)
    V = torch.cat(vals + [torch.zeros_like(qT[:1])], 0)

    # --- joint rotations M_R(q): one Rodrigues per present slot, products only where needed
    Rm: Optional[Tensor] = None  # (B, 3, 3, N)
    for j, (bodies, slots, rows) in enumerate(plan.rot_stages):
        a = unit[list(bodies), list(slots)]  # (p, 3)
        K = tf.skew(a)[..., None]
        aa = (a[:, :, None] * a[:, None, :])[..., None]
        ang = V[list(rows)][:, None, None, :]  # (p, 1, 1, N)
        s, c = torch.sin(ang), torch.cos(ang)
        Rj = c * eye + s * K + (1.0 - c) * aa  # (p, 3, 3, N)
        if Rm is None:
            if len(bodies) == B:
                Rm = Rj
            else:  # bodies without rotations get the identity
                sel = [bodies.index(b) if b in bodies else len(bodies) for b in range(B)]
                Rm = torch.cat((Rj, eye.expand(1, 3, 3, N)), 0)[sel]
        else:
            prod = _mm(Rm[list(bodies)], Rj)
            sel = [B + bodies.index(b) if b in bodies else b for b in range(B)]
            Rm = torch.cat((Rm, prod), 0)[sel]
    # --- joint translations along their (parent-scaled) axes
    tm: Optional[Tensor] = None  # (B, 3, N)
    if plan.trans_bodies:
        tb = list(plan.trans_bodies)
        s_tr = translation_factors(axes, s_parent, plan.unscaled_slots)  # OpenSim's rule, (B, 3)
        taxis = unit[tb, 3:] * s_tr[tb][:, :, None]  # (n, 3 slots, 3)
        tmt = sum(V[list(plan.trans_rows[k])][:, None, :] * taxis[:, k, :, None] for k in range(3))
        if len(tb) == B:
            tm = tmt
        else:
            sel = [tb.index(b) if b in tb else len(tb) for b in range(B)]
            tm = torch.cat((tmt, torch.zeros_like(tmt[:1])), 0)[sel]
    # --- local poses T(parent frame) M(q) T(child frame)^-1
    if Rm is None:
        R_loc = _mm(Rp, RcT)
        t_in = tcinv if tm is None else tm + tcinv
        R_loc, t_loc = R_loc.expand(B, 3, 3, N), (_mv(Rp, t_in) + tp).expand(B, 3, N)
    else:
        RmRcT = _mm(Rm, RcT)
        inner = _mv(Rm, tcinv) if tm is None else tm + _mv(Rm, tcinv)
        R_loc = _mm(Rp, RmRcT)
        t_loc = _mv(Rp, inner) + tp
    # --- compose down the tree, one step per depth level (parents lie in the previous level)
    Rs, ts = [], []
    for lvl, (bodies, ppos) in enumerate(plan.levels):
        idx = list(bodies)
        Rl, tl = R_loc[idx], t_loc[idx]
        if lvl:
            Rpar, tpar = Rs[-1][list(ppos)], ts[-1][list(ppos)]
            Rl, tl = _mm(Rpar, Rl), _mv(Rpar, tl) + tpar
        Rs.append(Rl)
        ts.append(tl)
    perm = list(plan.out_perm)
    R = torch.cat(Rs, 0)
    t = torch.cat(ts, 0)
    if perm != list(range(B)):
        R, t = R[perm], t[perm]
    if not with_markers:
        return R, t, None
    mb = list(plan.marker_bodies)
    off = (m_off * s_body[mb])[..., None]  # (M, 3, 1)
    X = _mv(R[mb], off) + t[mb]
    return R, t, X


# ----------------------------------------------------------------------------------------
# Frozen variant: the model's geometry is baked in as Python floats, so exact zeros and ones
# (identity joint frames, coordinate-aligned axes, identity slot functions) cost nothing and
# the traced graph stays small. No gradients to the model's geometry (q only).

_Row = Union[Tensor, float]


def _z(x: _Row) -> bool:
    return isinstance(x, float) and x == 0.0


def _mul(a: _Row, b: _Row) -> _Row:
    if _z(a) or _z(b):
        return 0.0
    if isinstance(a, float) and a == 1.0:
        return b
    if isinstance(b, float) and b == 1.0:
        return a
    if isinstance(a, float) and a == -1.0:
        return -b
    if isinstance(b, float) and b == -1.0:
        return -a
    if isinstance(a, float) and isinstance(b, float):
        return a * b
    return a * b


def _add(a: _Row, b: _Row) -> _Row:
    if _z(a):
        return b
    if _z(b):
        return a
    return a + b


def _rmm(A, Bm):
    return [[_add(_add(_mul(A[i][0], Bm[0][j]), _mul(A[i][1], Bm[1][j])), _mul(A[i][2], Bm[2][j])) for j in range(3)] for i in range(3)]


def _rmv(A, v):
    return [_add(_add(_mul(A[i][0], v[0]), _mul(A[i][1], v[1])), _mul(A[i][2], v[2])) for i in range(3)]


def _radd(a, b):
    return [_add(x, y) for x, y in zip(a, b)]


def _rot_rows(axis: tuple[float, float, float], ang, sin=torch.sin, cos=torch.cos):
    s, c = sin(ang), cos(ang)
    for k in range(3):  # coordinate axis (+-): the elementary rotation, 4 non-trivial entries
        if abs(abs(axis[k]) - 1.0) == 0.0 and all(axis[i] == 0.0 for i in range(3) if i != k):
            sg = axis[k]
            ss = s if sg > 0 else -s
            i, j = (k + 1) % 3, (k + 2) % 3
            R: list[list[_Row]] = [[0.0] * 3 for _ in range(3)]
            R[k][k] = 1.0
            R[i][i], R[j][j] = c, c
            R[i][j], R[j][i] = -ss, ss
            return R
    omc = 1.0 - c
    a0, a1, a2 = axis
    K = [[0.0, -a2, a1], [a2, 0.0, -a0], [-a1, a0, 0.0]]
    return [
        [_add(_add(c if i == j else 0.0, _mul(omc, axis[i] * axis[j])), _mul(s, K[i][j])) for j in range(3)]
        for i in range(3)
    ]


def _frozen_consts(model: Model) -> tuple:
    """Every geometric constant of ``model`` as nested tuples of Python floats (hashable)."""
    m = model.to(dtype=torch.float64, device="cpu")
    topo = m.topology
    s_body = m.global_scale * m.body_scales
    s_all = torch.cat((torch.ones_like(s_body[:1]), s_body), 0)
    s_parent = s_all[[p + 1 for p in topo.parents]]
    unit = m.axes / torch.linalg.vector_norm(m.axes, dim=-1, keepdim=True)
    Rp = tf.euler_xyz_to_matrix(m.parent_orientation)
    RcT = tf.euler_xyz_to_matrix(m.child_orientation).transpose(-1, -2)
    tp = m.parent_location * s_parent
    tcinv = -(RcT @ (m.child_location * s_body)[..., None])[..., 0]
    taxis = unit[:, 3:] * translation_scales(m, s_parent)[:, :, None]
    off = m.marker_offsets * s_body[list(topo.marker_bodies)]
    lin = []
    for g, prm in zip(topo.slot_groups, m.slot_params):
        if g.key[0] is F.FnKind.LINEAR:
            lin.append((tuple(prm[0].tolist()), tuple(prm[1].tolist())))
        elif g.key[0] is F.FnKind.CONSTANT:
            lin.append(((0.0,) * len(g.outputs), tuple(prm[0].tolist())))
        else:
            lin.append(None)
    T = lambda x: tuple(map(T, x)) if isinstance(x, list) else float(x)  # noqa: E731
    return (
        T(Rp.tolist()), T(RcT.tolist()), T(tp.tolist()), T(tcinv.tolist()),
        T(unit.tolist()), T(taxis.tolist()), T(off.tolist()), tuple(lin),
    )


def _chain_rows(plan: _Plan, consts: tuple, slot: dict, rot) -> tuple[list, list]:
    """World ``R`` (3x3 entries) and ``t`` (3 entries) per body from slot values, row algebra."""
    Rp, RcT, tp, tcinv, unit, taxis, _, _ = consts
    I3: list[list[_Row]] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    R_w: list = []
    t_w: list = []
    for b in range(len(plan.parents)):
        Rm = I3
        for sl in range(3):
            v = slot.get((b, sl))
            if v is None:
                continue
            Rk = rot(unit[b][sl], v)
            Rm = Rk if Rm is I3 else _rmm(Rm, Rk)
        tm: list[_Row] = [0.0, 0.0, 0.0]
        for sl in range(3, 6):
            v = slot.get((b, sl))
            if v is not None:
                tm = _radd(tm, [_mul(v, a) for a in taxis[b][sl - 3]])
        p = plan.parents[b]
        Rpb = [list(r) for r in Rp[b]]
        if p < 0:
            RA, tA = Rpb, list(tp[b])
        else:
            RA = _rmm(R_w[p], Rpb)
            tA = _radd(_rmv(R_w[p], list(tp[b])), t_w[p])
        RB = _rmm(RA, Rm)
        tB = _radd(_rmv(RA, tm), tA)
        R_w.append(_rmm(RB, [list(r) for r in RcT[b]]))
        t_w.append(_radd(_rmv(RB, list(tcinv[b])), tB))
    return R_w, t_w


class _Emitter:
    """Records straight-line Python for the row algebra run on symbols (see :func:`_lean_source`)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def emit(self, expr: str) -> "_Sym":
        name = f"v{len(self.lines)}"
        self.lines.append(f"    {name} = {expr}")
        return _Sym(name, self)


class _Sym:
    __slots__ = ("name", "em")

    def __init__(self, name: str, em: _Emitter) -> None:
        self.name, self.em = name, em

    @staticmethod
    def _s(x) -> str:
        return x.name if isinstance(x, _Sym) else repr(float(x))

    def __mul__(self, o):
        return self.em.emit(f"{self.name} * {self._s(o)}")

    def __rmul__(self, o):
        return self.em.emit(f"{self._s(o)} * {self.name}")

    def __add__(self, o):
        return self.em.emit(f"{self.name} + {self._s(o)}")

    def __radd__(self, o):
        return self.em.emit(f"{self._s(o)} + {self.name}")

    def __sub__(self, o):
        return self.em.emit(f"{self.name} - {self._s(o)}")

    def __rsub__(self, o):
        return self.em.emit(f"{self._s(o)} - {self.name}")

    def __neg__(self):
        return self.em.emit(f"-{self.name}")


def _straight_line(plan: _Plan, consts: tuple, with_markers: bool, tensors: bool) -> Optional[str]:
    """Source of the frozen row algebra as straight-line code, or None if unsupported.

    ``tensors=False``: ``_lean(q: list) -> flat tuple`` of Python floats (``B*9`` rotation
    entries, ``B*3`` translations, then ``M*3`` marker coordinates). ``tensors=True``:
    ``_kernel(qT (C, N)) -> (R (B, 3, 3, N), t (B, 3, N), X (M, 3, N) or None)`` with one tensor
    op per line -- what ``torch.compile`` traces fastest (no helper calls to inline).
    Supports models whose slot functions are constant/linear and that have no couplers.
    """
    lin = consts[7]
    if plan.n_dep or any(li is None for li in lin):
        return None
    em = _Emitter()
    q = [_Sym(f"q[{i}]", em) for i in range(plan.n_coords)]
    slot: dict = {}
    for g, li in zip(plan.slot_groups, lin):
        for k, (out, inp) in enumerate(zip(g.outputs, g.inputs)):
            if g.key[0] is F.FnKind.CONSTANT:
                slot[(out // 6, out % 6)] = li[1][k]
            else:
                slot[(out // 6, out % 6)] = _add(_mul(q[inp], li[0][k]), li[1][k])
    sn, cs = ("_torch.sin", "_torch.cos") if tensors else ("_sin", "_cos")

    def trig(fn: str):
        def f(v):
            if isinstance(v, _Sym):
                return em.emit(f"{fn}({v.name})")
            return math.sin(v) if fn.endswith("sin") else math.cos(v)

        return f

    R_w, t_w = _chain_rows(plan, consts, slot, lambda ax, v: _rot_rows(ax, v, trig(sn), trig(cs)))
    flatR = [e for Rb in R_w for row in Rb for e in row]
    flatt = [e for tb in t_w for e in tb]
    flatX: list = []
    if with_markers:
        off = consts[6]
        for mk, b in enumerate(plan.marker_bodies):
            flatX.extend(_radd(_rmv(R_w[b], list(off[mk])), t_w[b]))
    if not tensors:
        body = "\n".join(em.lines)
        return "def _lean(q):\n" + body + "\n    return (" + ", ".join(_Sym._s(e) for e in flatR + flatt + flatX) + ",)\n"
    B, M = len(plan.parents), len(plan.marker_bodies)

    def stack(entries: list, shape: str) -> str:
        items = [e.name if isinstance(e, _Sym) else f"_torch.full_like(ref, {float(e)!r})" for e in entries]
        return f"_torch.stack(({', '.join(items)},), 0).reshape({shape})"

    lines = ["def _kernel(qT):", "    q = qT.unbind(0)", "    ref = q[0]", "    N = ref.shape[0]"] + em.lines
    lines.append(f"    R = {stack(flatR, f'{B}, 3, 3, N')}")
    lines.append(f"    t = {stack(flatt, f'{B}, 3, N')}")
    if with_markers:
        lines.append(f"    X = {stack(flatX, f'{M}, 3, N')}" if M else "    X = qT.new_zeros((0, 3, N))")
    else:
        lines.append("    X = None")
    lines.append("    return R, t, X")
    return "\n".join(lines) + "\n"


def _exec(src: str, name: str, fn: str):
    scope: dict = {"_sin": math.sin, "_cos": math.cos, "_torch": torch}
    exec(compile(src, name, "exec"), scope)
    return scope[fn]


def _lean_function(plan: _Plan, consts: tuple, with_markers: bool):
    """Single-frame FK in plain Python floats (the lean batch-1 path), or None if unsupported."""
    src = _straight_line(plan, consts, with_markers, tensors=False)
    return None if src is None else _exec(src, f"<kinfunc lean fk {plan.n_coords} dof>", "_lean")


def _kernel_function(plan: _Plan, consts: tuple, with_markers: bool):
    """Frames-last straight-line tensor kernel ``qT (C, N) -> (R, t, X)``, or None if unsupported."""
    src = _straight_line(plan, consts, with_markers, tensors=True)
    return None if src is None else _exec(src, f"<kinfunc fk kernel {plan.n_coords} dof>", "_kernel")


def _fk_frozen_impl(plan: _Plan, consts: tuple, slot_params, coupler_params, qT: Tensor, with_markers: bool):
    off, lin = consts[6], consts[7]
    B = len(plan.parents)
    N = qT.shape[1]
    U = qT
    if plan.n_dep:
        deps = torch.cat(_eval_groups_soa(plan.coupler_groups, coupler_params, qT), 0)
        order = [o for grp in plan.coupler_groups for o in grp.outputs]
        U = torch.cat((qT, deps[[order.index(k) for k in range(plan.n_dep)]]), 0)
    # slot values: linear/constant ones as row arithmetic with float constants, others grouped
    slot: dict[tuple[int, int], _Row] = {}
    other = [(g, p) for g, p, li in zip(plan.slot_groups, slot_params, lin) if li is None]
    other_vals = _eval_groups_soa([g for g, _ in other], [p for _, p in other], U) if other else []
    ov = iter(other_vals)
    for g, li in zip(plan.slot_groups, lin):
        vals = next(ov) if li is None else None
        for k, (out, inp) in enumerate(zip(g.outputs, g.inputs)):
            b, sl = out // 6, out % 6
            if li is None:
                slot[(b, sl)] = vals[k]
            elif g.key[0] is F.FnKind.CONSTANT:
                slot[(b, sl)] = li[1][k]
            else:
                slot[(b, sl)] = _add(_mul(U[inp], li[0][k]), li[1][k])
    ref = qT.new_zeros(N)  # the shape of one row (a model without coordinates has no row of q)
    R_w, t_w = _chain_rows(plan, consts, slot, lambda ax, v: _rot_rows(ax, torch.full_like(ref, v) if isinstance(v, float) else v))

    def full(e: _Row) -> Tensor:
        return torch.full_like(ref, e) if isinstance(e, float) else e

    R = torch.stack([full(e) for Rb in R_w for row in Rb for e in row], 0).reshape(B, 3, 3, N)
    t = torch.stack([full(e) for tb in t_w for e in tb], 0).reshape(B, 3, N)
    if not with_markers:
        return R, t, None
    M = len(plan.marker_bodies)
    if M == 0:
        return R, t, qT.new_zeros((0, 3, N))
    xs = []
    for mk, b in enumerate(plan.marker_bodies):
        xs.extend(full(e) for e in _radd(_rmv(R_w[b], list(off[mk])), t_w[b]))
    return R, t, torch.stack(xs, 0).reshape(M, 3, N)


def fk_soa(model: Model, q: Tensor, markers: bool = False):
    """Uncompiled structure-of-arrays FK (the function :func:`compile_fk` compiles).

    ``q (..., C)`` -> ``(Poses(R (..., B, 3, 3), t (..., B, 3)), x (..., M, 3) or None)``.
    Equal to :func:`kinfunc.fk` / :func:`kinfunc.marker_positions`; runs under ``torch.func``.
    Outputs are permuted views of frames-last buffers.
    """
    plan = _plan(model.topology)
    return _wrap(plan, *_fk_soa_impl(plan, _leaves(model), _to_soa(q, model.topology.n_coordinates), markers), q.shape[:-1])


def _to_soa(q: Tensor, C: int) -> Tensor:
    if q.shape[-1] != C:
        raise ValueError(f"q has {q.shape[-1]} coordinates in its last dimension; the model has {C}")
    n = 1
    for d in q.shape[:-1]:
        n *= d
    return q.reshape(n, C).t().contiguous()  # (C, N); N given, not inferred: C may be 0


def _wrap(plan: _Plan, R: Tensor, t: Tensor, X: Optional[Tensor], batch: torch.Size):
    B = R.shape[0]
    Rv = R.permute(3, 0, 1, 2).reshape(batch + (B, 3, 3))
    tv = t.permute(2, 0, 1).reshape(batch + (B, 3))
    Xv = None if X is None else X.permute(2, 0, 1).reshape(batch + (X.shape[0], 3))
    return Poses(Rv, tv), Xv


# ----------------------------------------------------------------------------------------
# Compiled entry point and cache


class _Key(NamedTuple):
    topology: Topology
    dtype: torch.dtype
    device: str
    markers: bool
    dynamic: Optional[bool]
    backend: str
    frozen: Optional[tuple]  # the baked constants of a frozen model, or None


_CACHE: dict[_Key, Callable] = {}
_LOCK = threading.Lock()


def clear_compile_cache() -> None:
    """Forget every compiled kernel (they hold no tensors; this frees compiled code only)."""
    with _LOCK:
        _CACHE.clear()


def _compiled_kernel(key: _Key) -> Callable:
    with _LOCK:
        fn = _CACHE.get(key)
        if fn is None:
            plan = _plan(key.topology)
            with_markers = key.markers
            consts = key.frozen
            if consts is None:

                def kernel(leaves, qT):
                    return _fk_soa_impl(plan, leaves, qT, with_markers)

            else:
                straight = _kernel_function(plan, consts, with_markers)
                if straight is not None:  # generated straight-line code: fastest to trace

                    def kernel(params, qT):
                        return straight(qT)

                else:

                    def kernel(params, qT):
                        return _fk_frozen_impl(plan, consts, params[0], params[1], qT, with_markers)

            fn = torch.compile(kernel, fullgraph=True, dynamic=key.dynamic, backend=key.backend)
            _CACHE[key] = fn
        return fn


def _in_functorch() -> bool:
    return torch._C._functorch.peek_interpreter_stack() is not None


def _wants_grad(model: Model) -> bool:
    return any(t.requires_grad for t in _pt_leaves(model))


def _pt_leaves(model: Model) -> list[Tensor]:
    from ._pytree import tree_leaves

    return tree_leaves(model)


class CompiledFK:
    """Compiled FK bound to a model (see :func:`compile_fk`).

    ``fk_fast(q)`` -> :class:`~kinfunc.Poses`; ``fk_fast.markers(q)`` -> ``(..., M, 3)``;
    ``fk_fast.poses_and_markers(q)`` -> both from one pass. ``q (..., C)`` rad / m, outputs
    in the ground frame (m). Pass ``model=`` to evaluate another model with the same topology
    (e.g. a scaled or re-fitted one).
    """

    def __init__(self, model: Model, freeze: Optional[bool] = None, dynamic: Optional[bool] = True, backend: str = "inductor") -> None:
        self.model = model
        self.freeze = freeze
        self.dynamic = dynamic
        self.backend = backend
        self._plan = _plan(model.topology)
        self._consts: Optional[tuple] = None
        self._fns: dict = {}
        self._decided = False
        self._lean: dict = {}

    def _frozen_for(self, model: Model) -> Optional[tuple]:
        if model is self.model:
            if not self._decided:  # decided once for the bound model (on first use)
                freeze = self.freeze if self.freeze is not None else not _wants_grad(model)
                self._consts = _frozen_consts(model) if freeze else None
                self._decided = True
            return self._consts
        freeze = self.freeze if self.freeze is not None else not _wants_grad(model)
        return _frozen_consts(model) if freeze else None

    def _run(self, q: Tensor, model: Optional[Model], markers: bool, frames_last: bool = False):
        model = self.model if model is None else model
        if model is not self.model and model.topology != self.model.topology:
            raise ValueError(
                "CompiledFK: the model passed has a different topology than the one compiled for; "
                "call kinfunc.compile_fk(model) for it"
            )
        C = model.topology.n_coordinates
        if q.shape[-1] != C:
            raise ValueError(f"q has {q.shape[-1]} coordinates in its last dimension; the model has {C}")
        if _in_functorch():
            out = _fk_soa_impl(self._plan, _leaves(model), _to_soa(q, C), markers)
            return out if frames_last else _wrap(self._plan, *out, q.shape[:-1])
        consts = self._frozen_for(model)
        if (
            consts is not None
            and model is self.model
            and q.dim() == 1
            and not frames_last
            and q.device.type == "cpu"
            and not (q.requires_grad and torch.is_grad_enabled())
        ):
            lk = markers
            if lk not in self._lean:
                self._lean[lk] = _lean_function(self._plan, consts, markers)
            lean = self._lean[lk]
            if lean is not None:  # one frame: straight-line Python floats beat any kernel launch
                vals = torch.tensor(lean(q.tolist()), dtype=q.dtype)
                B = len(self._plan.parents)
                R = vals[: 9 * B].view(B, 3, 3)
                t = vals[9 * B : 12 * B].view(B, 3)
                return Poses(R, t), (vals[12 * B :].view(-1, 3) if markers else None)
        qT = _to_soa(q, C)
        ck = (qT.dtype, qT.device, markers, id(model) if consts is not None else None)
        fn = self._fns.get(ck) if model is self.model else None
        if fn is None:
            # the leaves-as-arguments graph is miscompiled by inductor with symbolic sizes
            dynamic = self.dynamic if consts is not None else False
            key = _Key(model.topology, qT.dtype, str(qT.device), markers, dynamic, self.backend, consts)
            fn = _compiled_kernel(key)
            if model is self.model:
                self._fns[ck] = fn
        if consts is not None:
            out = fn((model.slot_params, model.coupler_params), qT)
        else:
            out = fn(_leaves(model), qT)
        if frames_last:
            return out
        return _wrap(self._plan, *out, q.shape[:-1])

    def __call__(self, q: Tensor, model: Optional[Model] = None) -> Poses:
        """Body poses ``Poses(R (..., B, 3, 3), t (..., B, 3))`` at ``q (..., C)``."""
        # markers are computed by a separate kernel so a poses-only call writes no marker rows
        return self._run(q, model, False)[0]

    def markers(self, q: Tensor, model: Optional[Model] = None) -> Tensor:
        """Marker positions ``(..., M, 3)`` (ground, m; order ``model.marker_names``)."""
        return self._run(q, model, True)[1]

    def poses_and_markers(self, q: Tensor, model: Optional[Model] = None) -> tuple[Poses, Tensor]:
        """``(Poses, markers (..., M, 3))`` from one fused pass."""
        return self._run(q, model, True)

    def frames_last(self, q: Tensor, model: Optional[Model] = None, markers: bool = False):
        """Raw frames-last buffers ``(R (B, 3, 3, N), t (B, 3, N), X (M, 3, N) or None)``, ``N = q[..., 0].numel()``."""
        return self._run(q, model, markers, frames_last=True)

    def __repr__(self) -> str:
        return f"CompiledFK({self.model!r}, freeze={self.freeze}, dynamic={self.dynamic}, backend={self.backend!r})"


def compile_fk(
    model: Model, *, freeze: Optional[bool] = None, dynamic: Optional[bool] = True, backend: str = "inductor"
) -> CompiledFK:
    """Compiled forward kinematics for ``model``: a pure callable ``q (..., C) -> Poses``.

    Returns a :class:`CompiledFK` (``fk_fast(q)``, ``fk_fast.markers(q)``,
    ``fk_fast.poses_and_markers(q)``). Values and gradients equal :func:`kinfunc.fk`.

    Two compiled forms, chosen per call by ``freeze``:

    * frozen (``freeze=True``; the default when no leaf of the model requires grad): the
      model's geometry is baked into the compiled code as constants, so identity frames,
      coordinate axes and identity slot functions cost nothing -- the fast path (inference,
      IK over poses). Gradients flow to ``q`` only. Cached per ``(topology, dtype, device,
      model values)``: a model with other values compiles again.
    * leaves as arguments (``freeze=False``; the default when a model leaf requires grad):
      cached per ``(topology, dtype, device)``, gradients to every model leaf, a changed model
      (``model.replace(...)``, ``fk_fast(q, model=new_model)``) reuses the compiled code; slower
      (inductor materialises the small 3x3 products) and always ``dynamic=False`` (inductor
      2.13 miscompiles it with symbolic batch sizes).

    The cache holds no tensors (inputs are arguments, frozen constants are Python floats), so
    it pins no device memory. ``dynamic`` is passed to ``torch.compile`` for the frozen form
    (default ``True``: one compile serves every batch size >= 2; a batched call with one frame
    compiles once more, an unbatched single frame takes the lean path; ``None``: torch's
    default, specialise first and recompile symbolically at the second size; ``False``: one
    compile per batch size). Under ``torch.func`` transforms the uncompiled structure-of-arrays code runs.
    """
    return CompiledFK(model, freeze=freeze, dynamic=dynamic, backend=backend)
