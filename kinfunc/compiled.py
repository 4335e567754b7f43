"""Compiled, structure-of-arrays forward kinematics: :func:`compile_fk`.

The reference :func:`kinfunc.fk` is written for clarity and for every ``torch.func``
transform; it builds small ``3 x 3`` products batch-first, which CPU backends run slowly at
large batch. This module computes the *same* function in layouts a compiler can fuse:

* frames last (structure of arrays): ``q (..., C)`` is viewed as ``C`` rows of ``N`` frames
  and every output entry is a row ``(N,)``;
* **frozen form** (default when no model leaf requires grad): generated straight-line code
  (one tensor op per line) with the model's geometry baked in as Python floats and the tree
  unrolled into row arithmetic; exact zeros and ones are folded while generating, so a
  structurally-zero slot, an identity joint frame or a coordinate axis cost nothing and a pin
  about a coordinate axis is one ``sin``/``cos`` pair and four products. Linear and constant
  slot functions are folded too; couplers and spline/polynomial slots are evaluated from their
  parameters, which the kernel takes as arguments. Inductor fuses the whole tree into one
  vectorised loop over frames. Gradients flow to ``q``;
* **leaves form** (default when a model leaf requires grad): :func:`kinfunc.kinematics.forward`
  (the frames-last pass the IK Jacobian also runs) under ``torch.compile``, with the model's
  tensors and the plan's index tensors as arguments of the compiled code (cached per
  ``(topology, dtype, device)``, no recompile for a changed model, gradients to every leaf),
  vectorised over bodies; slower, ``dynamic=False`` only. On CUDA with Triton its tree
  composition is the ``kinfunc::compose_chain`` custom op (the Triton kernel), called from
  inductor's code;
* **lean single frame**: for one unbatched frame without grad on CPU, the frozen row algebra
  is generated once as straight-line Python over floats (no tensor ops, no kernel launch).

Outputs are views of frames-last buffers, ``R (B, 3, 3, N)`` and ``t (B, 3, N)``, permuted to
the public layout ``(..., B, 3, 3)``: values equal :func:`kinfunc.fk`, but the strides differ
(call ``.contiguous()`` if a consumer needs a dense batch-first tensor; that copy costs
about as much as the FK itself at large batch). :meth:`CompiledFK.frames_last` returns the
raw buffers.

Warm-up: the first call for a topology/dtype/device (and, frozen, model values) traces and
compiles: ~15-20 s cold (empty inductor cache) for the 18-DOF lower body on this shared 2-core
CPU, ~5 s when inductor's on-disk cache is warm; the backward is compiled on the first
backward call. Inside ``torch.func`` transforms (``vmap``, ``grad``, ``jacrev``, ``jacfwd``)
:func:`kinfunc.fk` itself runs (uncompiled), so results and derivatives are identical.
"""
from __future__ import annotations

import dataclasses
import math
import os
import threading
import types
from typing import Callable, NamedTuple, Optional, Union

import torch
from torch import Tensor

from . import functions as F
from . import transforms as tf
from .fk import Poses, fk, marker_positions, translation_scales
from .kinematics import KinematicPlan, ModelLeaves, plan_tables, forward, joint_constants
from .kernels.chain import chain_op as _chain_op
from .model import Model, Topology

__all__ = ["compile_fk", "CompiledFK", "fk_soa", "clear_compile_cache"]

# ----------------------------------------------------------------------------------------
# Static plan (pure Python; hashable; derived from the topology only)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the frozen forms read from a topology (hashable, no tensors)."""

    parents: tuple[int, ...]
    n_coords: int
    n_dep: int
    slot_groups: tuple  # FnGroup
    coupler_groups: tuple
    marker_bodies: tuple[int, ...]


def _plan(topo: Topology) -> _Plan:
    return _Plan(
        parents=topo.parents,
        n_coords=topo.n_coordinates,
        n_dep=len(topo.dependent_names),
        slot_groups=topo.slot_groups,
        coupler_groups=topo.coupler_groups,
        marker_bodies=topo.marker_bodies,
    )


# ----------------------------------------------------------------------------------------
# Joint functions on frames-last rows (the frozen form's couplers and spline/polynomial slots)


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


def _soa_inputs(plan: _Plan, qT: Tensor, coupler_params) -> Tensor:
    """``[q, dependents(q)]`` frames last: ``qT (C, N)`` -> ``(C + D, N)``."""
    if not plan.n_dep:
        return qT
    deps = torch.cat(_eval_groups_soa(plan.coupler_groups, coupler_params, qT), 0)
    order = [o for grp in plan.coupler_groups for o in grp.outputs]
    return torch.cat((qT, deps[[order.index(k) for k in range(plan.n_dep)]]), 0)


def _fk_leaves(plan: KinematicPlan, leaves: ModelLeaves, qT: Tensor, with_markers: bool, chain_op=None):
    """The leaves form: :func:`kinfunc.kinematics.forward` with the model's leaves as inputs.
    ``qT (C, N)`` -> ``R (B, 3, 3, N)``, ``t (B, 3, N)`` (model body order) and markers
    ``(M, 3, N)`` or None. ``chain_op``: the ``kinfunc::compose_chain``
    custom op (:func:`kinfunc.kernels.chain.chain_op`) to compose the tree with (the Triton kernel
    on CUDA), or None for one product per tree level."""
    f = forward(plan, joint_constants(plan, leaves), qT, chain_op, homogeneous=False)
    inv = plan.order_inv
    R, t = (f.R, f.t) if inv is None else (f.R.index_select(0, inv), f.t.index_select(0, inv))
    return R, t, (f.p if with_markers else None)


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
    """Source of the frozen row algebra as straight-line code (one operation per line).

    ``tensors=True``: ``_kernel(qT (C, N), slot_params, coupler_params) -> (R (B, 3, 3, N),
    t (B, 3, N), X (M, 3, N) or None)``, one tensor op per line -- what ``torch.compile`` traces
    fastest. Linear/constant slot functions are folded into the rows; couplers and other slot
    functions are evaluated from the parameters passed (``_inputs``/``_group`` below).
    ``tensors=False``: ``_lean(q: list) -> flat tuple`` of Python floats (``B*9`` rotation
    entries, ``B*3`` translations, then ``M*3`` marker coordinates); None (unsupported) for
    models with couplers or slot functions other than constant/linear.
    """
    lin = consts[7]
    if not tensors and (plan.n_dep or any(li is None for li in lin)):
        return None
    em = _Emitter()
    u = [_Sym(f"u[{i}]", em) for i in range(plan.n_coords + plan.n_dep)]  # [q, dependents]
    head = ["    U = _inputs(qT, cp)", "    u = U.unbind(0)"] if tensors else []
    slot: dict = {}
    for gi, (g, li) in enumerate(zip(plan.slot_groups, lin)):
        if li is None:
            head.append(f"    s{gi} = _group({gi}, U, sp).unbind(0)")
        for k, (out, inp) in enumerate(zip(g.outputs, g.inputs)):
            if li is None:
                slot[(out // 6, out % 6)] = _Sym(f"s{gi}[{k}]", em)
            elif g.key[0] is F.FnKind.CONSTANT:
                slot[(out // 6, out % 6)] = li[1][k]
            else:
                slot[(out // 6, out % 6)] = _add(_mul(u[inp], li[0][k]), li[1][k])
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
        return "def _lean(u):\n" + body + "\n    return (" + ", ".join(_Sym._s(e) for e in flatR + flatt + flatX) + ",)\n"
    B, M = len(plan.parents), len(plan.marker_bodies)

    def stack(entries: list, shape: str) -> str:
        items = [e.name if isinstance(e, _Sym) else f"_torch.full((N,), {float(e)!r}, dtype=qT.dtype, device=qT.device)" for e in entries]
        return f"_torch.stack(({', '.join(items)},), 0).reshape({shape})"

    lines = ["def _kernel(qT, sp, cp):", "    N = qT.shape[1]"] + head + em.lines
    lines.append(f"    R = {stack(flatR, f'{B}, 3, 3, N')}")
    lines.append(f"    t = {stack(flatt, f'{B}, 3, N')}")
    if with_markers:
        lines.append(f"    X = {stack(flatX, f'{M}, 3, N')}" if M else "    X = qT.new_zeros((0, 3, N))")
    else:
        lines.append("    X = None")
    lines.append("    return R, t, X")
    return "\n".join(lines) + "\n"


def _exec(src: str, name: str, fn: str, plan: _Plan):
    scope: dict = {
        "_sin": math.sin, "_cos": math.cos, "_torch": torch,
        "_inputs": lambda qT, cp: _soa_inputs(plan, qT, cp),
        "_group": lambda gi, U, sp: _eval_groups_soa([plan.slot_groups[gi]], [sp[gi]], U)[0],
    }
    exec(compile(src, name, "exec"), scope)
    return scope[fn]


def _lean_function(plan: _Plan, consts: tuple, with_markers: bool):
    """Single-frame FK in plain Python floats (the lean batch-1 path), or None if unsupported."""
    src = _straight_line(plan, consts, with_markers, tensors=False)
    return None if src is None else _exec(src, f"<kinfunc lean fk {plan.n_coords} dof>", "_lean", plan)


def _kernel_function(plan: _Plan, consts: tuple, with_markers: bool):
    """The frozen form: frames-last straight-line tensor kernel ``(qT (C, N), slot_params,
    coupler_params) -> (R, t, X)``; a fresh function (own code object) per call."""
    src = _straight_line(plan, consts, with_markers, tensors=True)
    return _exec(src, f"<kinfunc fk kernel {plan.n_coords} dof>", "_kernel", plan)


def _fk_frozen_impl(plan: _Plan, consts: tuple, slot_params, coupler_params, qT: Tensor, with_markers: bool):
    """The frozen form run eagerly (what :func:`compile_fk` compiles when it freezes)."""
    return _kernel_function(plan, consts, with_markers)(qT, slot_params, coupler_params)


def fk_soa(model: Model, q: Tensor, markers: bool = False):
    """Uncompiled structure-of-arrays FK (the leaves form of :func:`compile_fk`, not compiled).

    ``q (..., C)`` -> ``(Poses(R (..., B, 3, 3), t (..., B, 3)), x (..., M, 3) or None)``.
    Equal to :func:`kinfunc.fk` / :func:`kinfunc.marker_positions`; runs under ``torch.func``.
    Outputs are permuted views of frames-last buffers.
    """
    plan = KinematicPlan.build(model.topology, q.device)
    return _wrap(*_fk_leaves(plan, ModelLeaves.of(model), _to_soa(q, model.topology.n_coordinates), markers), q.shape[:-1])


def _to_soa(q: Tensor, C: int) -> Tensor:
    if q.shape[-1] != C:
        raise ValueError(f"q has {q.shape[-1]} coordinates in its last dimension; the model has {C}")
    n = 1
    for d in q.shape[:-1]:
        n *= d
    return q.reshape(n, C).t().contiguous()  # (C, N); N given, not inferred: C may be 0


def _wrap(R: Tensor, t: Tensor, X: Optional[Tensor], batch: torch.Size):
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
    frozen: Optional[tuple]  # the baked constants of a frozen model, or None (leaves form)
    chain_op: bool  # leaves form: compose through the kinfunc::compose_chain custom op


_CACHE: dict[_Key, Callable] = {}
_LOCK = threading.Lock()


def clear_compile_cache() -> None:
    """Forget every compiled kernel (they hold no tensors; this frees compiled code only)."""
    with _LOCK:
        _CACHE.clear()


def _options(key: _Key) -> Optional[dict]:
    """Inductor options for a CPU compile (None: inductor's defaults, e.g. on CUDA).

    * ``cpp.vec_isa_ok``: inductor's first compile in a cache directory dry-compiles and loads
      probe programs for every candidate vector ISA (~6-12 s of a cold warm-up here); the ISAs
      are already filtered by the CPU's cpuinfo flags, so the probe is skipped unless the user
      chose otherwise (``TORCHINDUCTOR_VEC_ISA_OK``).
    * ``max_fusion_size`` (frozen form): the straight-line kernel has one output row per entry
      of every body's pose (108 for the lower body, plus markers). Inductor's default cap of 64
      nodes per fused kernel split it into three loops over the frames, each re-reading the
      rows the previous one wrote and recomputing the sin/cos it needs (42 instead of 30 for
      the lower body); lifting the cap gives one loop with each sin/cos once (~1.5x faster).
    """
    if key.backend != "inductor" or not key.device.startswith("cpu"):
        return None
    opts: dict = {}
    if "TORCHINDUCTOR_VEC_ISA_OK" not in os.environ:
        opts["cpp.vec_isa_ok"] = True
    if key.frozen is not None:
        opts["max_fusion_size"] = 1 << 14
    return opts or None


def _compiled_kernel(key: _Key) -> Callable:
    with _LOCK:
        fn = _CACHE.get(key)
        if fn is None:
            plan = _plan(key.topology)
            if key.frozen is not None:
                kernel = _kernel_function(plan, key.frozen, key.markers)
            else:
                markers, op, tables = key.markers, None, plan_tables(key.topology)
                if key.chain_op:  # CUDA with Triton (or the tests' switch): the Triton kernel's op
                    from .kernels.triton_chain import compose_chain_op  # lazily: it imports Triton

                    op = compose_chain_op

                def kernel(qT, leaves, parts):  # parts: the plan's index tensors (the cache holds none)
                    return _fk_leaves(KinematicPlan.assemble(tables, parts), leaves, qT, markers, op)

                # own code object per key: Dynamo's caches and recompile limit are per code object
                kernel = types.FunctionType(kernel.__code__.replace(), kernel.__globals__, closure=kernel.__closure__)
            fn = torch.compile(kernel, fullgraph=True, dynamic=key.dynamic, backend=key.backend, options=_options(key))
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

    def __init__(self, model: Model, freeze: Optional[bool] = None, dynamic: Optional[bool] = None, backend: str = "inductor") -> None:
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
        if _in_functorch():  # the reference FK itself: every transform, and fastest uncompiled
            P = fk(model, q)
            X = marker_positions(model, q, P) if markers else None
            if not frames_last:
                return P, X
            B, n = model.topology.n_bodies, q[..., 0].numel()
            Xl = None if X is None else X.reshape(n, -1, 3).permute(1, 2, 0)
            return P.R.reshape(n, B, 3, 3).permute(1, 2, 3, 0), P.t.reshape(n, B, 3).permute(1, 2, 0), Xl
        consts = self._frozen_for(model)
        if (
            consts is not None
            and model is self.model
            and q.dim() == 1
            and not frames_last
            and q.device.type == "cpu"
            and not (q.requires_grad and torch.is_grad_enabled())
        ):
            if markers not in self._lean:
                self._lean[markers] = _lean_function(self._plan, consts, markers)
            lean = self._lean[markers]
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
            op = consts is None and _chain_op(qT) is not None
            key = _Key(model.topology, qT.dtype, str(qT.device), markers, dynamic, self.backend, consts, op)
            fn = _compiled_kernel(key)
            if model is self.model:
                self._fns[ck] = fn
        out = fn(qT, model.slot_params, model.coupler_params) if consts is not None else fn(qT, ModelLeaves.of(model), KinematicPlan.parts(model.topology, qT.device))
        return out if frames_last else _wrap(*out, q.shape[:-1])

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
    model: Model, *, freeze: Optional[bool] = None, dynamic: Optional[bool] = None, backend: str = "inductor"
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
      2.13 miscompiles it with symbolic batch sizes). On CUDA with Triton installed its tree
      composition is the ``kinfunc::compose_chain`` custom op (the Triton kernel).

    The cache holds no tensors (inputs are arguments, frozen constants are Python floats), so
    it pins no device memory. ``dynamic`` is passed to ``torch.compile`` for the frozen form:
    ``None`` (default) compiles the first batch size statically (fastest to compile and to
    run) and, if another size comes, once more with a symbolic batch size that serves every
    later size; ``True`` compiles symbolically at once (slower warm-up); ``False`` compiles
    once per batch size. A batched call with one frame specialises once more; an unbatched
    single CPU frame without grad takes the lean path (no compile). Under ``torch.func``
    transforms :func:`kinfunc.fk` itself runs (uncompiled).
    """
    return CompiledFK(model, freeze=freeze, dynamic=dynamic, backend=backend)
