"""Compiled, structure-of-arrays forward kinematics: :func:`compile_fk`.

The reference :func:`kinfunc.fk` is written for clarity and for every ``torch.func``
transform; it builds small ``3 x 3`` products batch-first, which CPU backends run slowly at
large batch. This module computes the *same* function in a layout a compiler can fuse:

* frames last (structure of arrays): the input ``q (..., C)`` is viewed as ``C`` rows of
  ``N`` frames, and every matrix entry of every body is one row ``(N,)``; all arithmetic is
  elementwise on rows, so ``torch.compile`` (inductor) fuses the whole tree into one
  vectorised loop over frames;
* specialised per joint slot from the static :class:`~kinfunc.model.Topology`: a
  structurally-zero slot costs nothing, a pin is one ``sin``/``cos`` pair and a 3x3 built from
  them (no 4x4 products), a joint without translation slots skips the translation sum;
* model tensors are *arguments*, never constants baked into the compiled code: the compiled
  function is cached per ``(topology, dtype, device)`` and holds no tensors; a changed model
  (``model.replace(...)``, scaled, moved) with the same topology reuses it with no recompile,
  and gradients flow to every model leaf.

Outputs are views of frames-last buffers, ``R (B, 3, 3, N)`` and ``t (B, 3, N)``, permuted to
the public layout ``(..., B, 3, 3)``: values equal :func:`kinfunc.fk`, but the strides differ
(call ``.contiguous()`` if a consumer needs a dense batch-first tensor; that copy costs about
as much as the FK itself at large batch). ``frames_last=True`` returns the raw buffers.

Warm-up: the first call for a topology/dtype/device traces and compiles (about 10-30 s on a
2-core CPU for the 18-DOF lower body, longer with gradients: the backward is compiled on the
first backward call); later calls with any batch size reuse it (``dynamic=True`` by
default: one compiled kernel for every batch size). Inside ``torch.func`` transforms
(``vmap``, ``grad``, ``jacrev``, ``jacfwd``) the same structure-of-arrays function runs
eagerly (no compiled code is entered), so results and derivatives are identical.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, NamedTuple, Optional, Union

import torch
from torch import Tensor

from . import functions as F
from . import transforms as tf
from .fk import Poses
from .model import Model, Topology

__all__ = ["compile_fk", "CompiledFK", "fk_soa", "clear_compile_cache"]

# ----------------------------------------------------------------------------------------
# Static plan (pure Python; hashable; derived from the topology only)


@dataclasses.dataclass(frozen=True)
class _Plan:
    parents: tuple[int, ...]
    n_coords: int
    n_dep: int
    # per body, per slot 0..5: (group, row) of the function group that computes it, or None
    slot_src: tuple[tuple[Optional[tuple[int, int]], ...], ...]
    slot_groups: tuple  # FnGroup
    coupler_groups: tuple
    marker_bodies: tuple[int, ...]


def _plan(topo: Topology) -> _Plan:
    B = topo.n_bodies
    src: list[list[Optional[tuple[int, int]]]] = [[None] * 6 for _ in range(B)]
    for g, grp in enumerate(topo.slot_groups):
        for k, out in enumerate(grp.outputs):
            src[out // 6][out % 6] = (g, k)
    return _Plan(
        parents=topo.parents,
        n_coords=topo.n_coordinates,
        n_dep=len(topo.dependent_names),
        slot_src=tuple(tuple(s) for s in src),
        slot_groups=topo.slot_groups,
        coupler_groups=topo.coupler_groups,
        marker_bodies=topo.marker_bodies,
    )


# ----------------------------------------------------------------------------------------
# Row algebra. An entry is a row ``(N,)``, a 0-d tensor (a per-model constant), or a Python
# float 0.0/1.0 standing for a structural zero/one (costs nothing).

Entry = Union[Tensor, float]


def _is(x: Entry, v: float) -> bool:
    return isinstance(x, float) and x == v


def _mul(a: Entry, b: Entry) -> Entry:
    if _is(a, 0.0) or _is(b, 0.0):
        return 0.0
    if _is(a, 1.0):
        return b
    if _is(b, 1.0):
        return a
    return a * b


def _add(a: Entry, b: Entry) -> Entry:
    if _is(a, 0.0):
        return b
    if _is(b, 0.0):
        return a
    return a + b


def _dot3(a: list[Entry], b: list[Entry]) -> Entry:
    return _add(_add(_mul(a[0], b[0]), _mul(a[1], b[1])), _mul(a[2], b[2]))


_I3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def _matmul(A: list[list[Entry]], Bm: list[list[Entry]]) -> list[list[Entry]]:
    if A is _I3:
        return Bm
    if Bm is _I3:
        return A
    cols = [[Bm[0][j], Bm[1][j], Bm[2][j]] for j in range(3)]
    return [[_dot3(A[i], cols[j]) for j in range(3)] for i in range(3)]


def _matvec(A: list[list[Entry]], v: list[Entry]) -> list[Entry]:
    if A is _I3:
        return list(v)
    return [_dot3(A[i], v) for i in range(3)]


def _vadd(a: list[Entry], b: list[Entry]) -> list[Entry]:
    return [_add(x, y) for x, y in zip(a, b)]


def _rows(x: Tensor) -> list:
    """A small constant tensor ``(3,)`` or ``(3, 3)`` as nested lists of 0-d tensors."""
    if x.dim() == 1:
        return list(x.unbind(0))
    return [list(r.unbind(0)) for r in x.unbind(0)]


def _axis_rotation(a: list[Tensor], angle: Tensor) -> list[list[Entry]]:
    """Rodrigues ``c I + s [a]x + (1 - c) a a^T`` for a unit axis of 0-d tensors, angle row."""
    s, c = torch.sin(angle), torch.cos(angle)
    omc = 1.0 - c
    a0, a1, a2 = a
    return [
        [c + omc * (a0 * a0), omc * (a0 * a1) - s * a2, omc * (a0 * a2) + s * a1],
        [omc * (a0 * a1) + s * a2, c + omc * (a1 * a1), omc * (a1 * a2) - s * a0],
        [omc * (a0 * a2) - s * a1, omc * (a1 * a2) + s * a0, c + omc * (a2 * a2)],
    ]


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
    # --- per-model constants (tiny (B, ...) tensors; computed once per call, not per frame)
    s_body = g_scale * b_scales  # (B, 3)
    s_all = torch.cat((torch.ones_like(s_body[:1]), s_body), 0)
    s_parent = s_all[[p + 1 for p in plan.parents]]
    unit = axes / torch.linalg.vector_norm(axes, dim=-1, keepdim=True)  # (B, 6, 3)
    Rp = tf.euler_xyz_to_matrix(p_ori)
    RcT = tf.euler_xyz_to_matrix(c_ori).transpose(-1, -2)
    tp = p_loc * s_parent
    tcinv = -(RcT @ (c_loc * s_body)[..., None])[..., 0]  # translation of T(child frame)^-1
    # translation slot k moves along its unit axis scaled by the parent's scale component k
    taxis = unit[:, 3:] * s_parent[:, :, None]  # (B, 3 slots, 3)

    # --- function values (all coordinates and slots with a function), frames last
    U = qT
    if plan.n_dep:
        deps = _eval_groups_soa(plan.coupler_groups, coupler_params, qT)
        dep_rows: list[Optional[Tensor]] = [None] * plan.n_dep
        for grp, vals in zip(plan.coupler_groups, deps):
            for k, o in enumerate(grp.outputs):
                dep_rows[o] = vals[k]
        U = torch.cat((qT, torch.stack(dep_rows, 0)), 0)  # type: ignore[arg-type]
    slot_vals = _eval_groups_soa(plan.slot_groups, slot_params, U)

    R_w: list[list[list[Entry]]] = []
    t_w: list[list[Entry]] = []
    for b in range(B):
        # joint motion M(q): rotations present in this joint, applied successively
        Rm: list[list[Entry]] = _I3
        for s in range(3):
            src = plan.slot_src[b][s]
            if src is None:
                continue
            Rk = _axis_rotation(list(unit[b, s].unbind(0)), slot_vals[src[0]][src[1]])
            Rm = Rk if Rm is _I3 else _matmul(Rm, Rk)
        tm: list[Entry] = [0.0, 0.0, 0.0]
        for s in range(3, 6):
            src = plan.slot_src[b][s]
            if src is None:
                continue
            v = slot_vals[src[0]][src[1]]
            ax = taxis[b, s - 3].unbind(0)
            tm = _vadd(tm, [v * ax[0], v * ax[1], v * ax[2]])
        # world pose of the parent-side joint frame: W_parent @ T(parent frame)
        Rpb, tpb = _rows(Rp[b]), _rows(tp[b])
        p = plan.parents[b]
        if p < 0:
            RA, tA = Rpb, tpb
        else:
            RA = _matmul(R_w[p], Rpb)
            tA = _vadd(_matvec(R_w[p], tpb), t_w[p])
        # times M(q), times T(child frame)^-1
        RB = _matmul(RA, Rm)
        tB = _vadd(_matvec(RA, tm), tA)
        R_w.append(_matmul(RB, _rows(RcT[b])))
        t_w.append(_vadd(_matvec(RB, _rows(tcinv[b])), tB))

    ref = qT[0]

    def full(e: Entry) -> Tensor:
        if isinstance(e, float):
            return torch.full_like(ref, e)
        return e if e.dim() == 1 else e.expand(N)

    R = torch.stack([full(e) for Rb in R_w for row in Rb for e in row], 0).reshape(B, 3, 3, N)
    t = torch.stack([full(e) for tb in t_w for e in tb], 0).reshape(B, 3, N)
    if not with_markers:
        return R, t, None
    M = len(plan.marker_bodies)
    if M == 0:
        return R, t, qT.new_zeros((0, 3, N))
    off = m_off * s_body[list(plan.marker_bodies)]  # (M, 3)
    xs = []
    for m, b in enumerate(plan.marker_bodies):
        xs.extend(full(e) for e in _vadd(_matvec(R_w[b], _rows(off[m])), t_w[b]))
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
    return q.reshape(-1, C).t()


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

            def kernel(leaves, qT):
                return _fk_soa_impl(plan, leaves, qT, with_markers)

            fn = torch.compile(kernel, fullgraph=True, dynamic=key.dynamic, backend=key.backend)
            _CACHE[key] = fn
        return fn


def _in_functorch() -> bool:
    return torch._C._functorch.peek_interpreter_stack() is not None


class CompiledFK:
    """Compiled FK bound to a model (see :func:`compile_fk`).

    ``fk_fast(q)`` -> :class:`~kinfunc.Poses`; ``fk_fast.markers(q)`` -> ``(..., M, 3)``;
    ``fk_fast.poses_and_markers(q)`` -> both from one pass. ``q (..., C)`` rad / m, outputs
    in the ground frame (m). Pass ``model=`` to evaluate another model with the same topology
    (e.g. a scaled or re-fitted one) through the same compiled code.
    """

    def __init__(self, model: Model, dynamic: Optional[bool] = True, backend: str = "inductor") -> None:
        self.model = model
        self.dynamic = dynamic
        self.backend = backend
        self._plan = _plan(model.topology)

    def _run(self, q: Tensor, model: Optional[Model], markers: bool, frames_last: bool = False):
        model = self.model if model is None else model
        if model.topology != self.model.topology:
            raise ValueError(
                "CompiledFK: the model passed has a different topology than the one compiled for; "
                "call kinfunc.compile_fk(model) for it"
            )
        qT = _to_soa(q, model.topology.n_coordinates)
        leaves = _leaves(model)
        if _in_functorch():
            out = _fk_soa_impl(self._plan, leaves, qT, markers)
        else:
            key = _Key(model.topology, qT.dtype, str(qT.device), markers, self.dynamic, self.backend)
            out = _compiled_kernel(key)(leaves, qT)
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
        return f"CompiledFK({self.model!r}, dynamic={self.dynamic}, backend={self.backend!r})"


def compile_fk(model: Model, *, dynamic: Optional[bool] = True, backend: str = "inductor") -> CompiledFK:
    """Compiled forward kinematics for ``model``: a pure callable ``q (..., C) -> Poses``.

    Returns a :class:`CompiledFK` (``fk_fast(q)``, ``fk_fast.markers(q)``,
    ``fk_fast.poses_and_markers(q)``). Values and gradients equal :func:`kinfunc.fk`.

    Caching: the compiled code is cached per ``(topology, dtype, device)`` and takes the
    model's tensors as arguments, so (1) calling ``compile_fk`` again for a model with the same
    topology (rescaled, moved markers, new offsets) is free and does not recompile, (2) the
    cache holds no tensors and pins no device memory, (3) the bound model is the one passed
    here: a *new* model (models are immutable) needs ``compile_fk(new_model)`` or
    ``fk_fast(q, model=new_model)``. ``dynamic=True`` (default) compiles one kernel for every
    batch size; ``dynamic=False`` specialises (and recompiles) per batch shape.

    Under ``torch.func`` transforms the same structure-of-arrays code runs uncompiled.
    """
    return CompiledFK(model, dynamic=dynamic, backend=backend)
