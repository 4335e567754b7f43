"""Triton chain-composition kernel and the ``kinfunc::compose_chain`` custom op.

One program composes the whole tree for a block of ``BLOCK`` frames: for each body in
topological order it loads the local pose ``(R, t)`` of every frame in the block, the parent's
world pose (just written by the same program), and writes ``R_w = R_p R_l``,
``t_w = R_p t_l + t_p``. The backward kernel is the reverse adjoint sweep: bodies in reverse
order, each body's accumulated adjoint ``(gR, gt)`` gives ``dR_l = R_p^T gR``,
``dt_l = R_p^T gt`` and adds ``gR R_l^T + gt t_l^T`` / ``gt`` into its parent's adjoint.

Layout: ``R (N, B, 3, 3)``, ``t (N, B, 3)`` contiguous, frames first (one frame per lane).
Each lane reads and writes only its own frame's rows, so the store-then-load of a parent's
world pose inside one program needs no cross-lane synchronisation.

The op ``torch.ops.kinfunc.compose_chain(parents, R_local, t_local)`` runs the Triton kernel
when Triton can run it (CUDA tensors, or any tensor with ``TRITON_INTERPRET=1`` set before
Triton was imported, which is how the tests run it on CPU), and the torch twin otherwise. It
has a fake (meta) implementation, an autograd formula (the backward is the op
``kinfunc::compose_chain_backward``, itself Triton/twin) and vmap rules, so it works under
``torch.compile`` and ``torch.func``. Second derivatives through the op are not supported
(use the twin, :func:`compose_chain_reference`, for those).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

from .chain import compose_chain_reference

__all__ = ["triton_available", "triton_runs_on", "compose_chain_op", "compose_chain_backward_reference"]

try:  # Triton is optional (pip install kinfunc[triton])
    import triton
    import triton.language as tl

    _HAVE_TRITON = True
except Exception:  # pragma: no cover - depends on the environment
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]
    _HAVE_TRITON = False


def triton_available() -> bool:
    """Whether Triton imported."""
    return _HAVE_TRITON


def triton_runs_on(x: Tensor) -> bool:
    """Whether the Triton kernel can run on ``x``'s device (CUDA, or the CPU interpreter)."""
    if not _HAVE_TRITON:
        return False
    if x.is_cuda:
        return True
    return x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") == "1"


BLOCK = 128

if _HAVE_TRITON:

    @triton.jit
    def _load_pose(R_ptr, t_ptr, frame, b, B: tl.constexpr, mask):
        rb = R_ptr + frame * (B * 9) + b * 9
        tb = t_ptr + frame * (B * 3) + b * 3
        r00 = tl.load(rb + 0, mask=mask)
        r01 = tl.load(rb + 1, mask=mask)
        r02 = tl.load(rb + 2, mask=mask)
        r10 = tl.load(rb + 3, mask=mask)
        r11 = tl.load(rb + 4, mask=mask)
        r12 = tl.load(rb + 5, mask=mask)
        r20 = tl.load(rb + 6, mask=mask)
        r21 = tl.load(rb + 7, mask=mask)
        r22 = tl.load(rb + 8, mask=mask)
        t0 = tl.load(tb + 0, mask=mask)
        t1 = tl.load(tb + 1, mask=mask)
        t2 = tl.load(tb + 2, mask=mask)
        return r00, r01, r02, r10, r11, r12, r20, r21, r22, t0, t1, t2

    @triton.jit
    def _load_parent(R_ptr, t_ptr, frame, p, B: tl.constexpr, mask):
        """World pose of parent ``p`` per frame; the identity where ``p`` is ground (-1)."""
        has = (frame * 0 + p) >= 0
        a00, a01, a02, a10, a11, a12, a20, a21, a22, s0, s1, s2 = _load_pose(
            R_ptr, t_ptr, frame, tl.maximum(p, 0), B, mask & has
        )
        return (
            tl.where(has, a00, 1.0), tl.where(has, a01, 0.0), tl.where(has, a02, 0.0),
            tl.where(has, a10, 0.0), tl.where(has, a11, 1.0), tl.where(has, a12, 0.0),
            tl.where(has, a20, 0.0), tl.where(has, a21, 0.0), tl.where(has, a22, 1.0),
            tl.where(has, s0, 0.0), tl.where(has, s1, 0.0), tl.where(has, s2, 0.0),
        )

    @triton.jit
    def _store_pose(R_ptr, t_ptr, frame, b, B: tl.constexpr, mask, r00, r01, r02, r10, r11, r12, r20, r21, r22, t0, t1, t2):
        rb = R_ptr + frame * (B * 9) + b * 9
        tb = t_ptr + frame * (B * 3) + b * 3
        tl.store(rb + 0, r00, mask=mask)
        tl.store(rb + 1, r01, mask=mask)
        tl.store(rb + 2, r02, mask=mask)
        tl.store(rb + 3, r10, mask=mask)
        tl.store(rb + 4, r11, mask=mask)
        tl.store(rb + 5, r12, mask=mask)
        tl.store(rb + 6, r20, mask=mask)
        tl.store(rb + 7, r21, mask=mask)
        tl.store(rb + 8, r22, mask=mask)
        tl.store(tb + 0, t0, mask=mask)
        tl.store(tb + 1, t1, mask=mask)
        tl.store(tb + 2, t2, mask=mask)

    @triton.jit
    def _chain_fwd_kernel(parents_ptr, Rl_ptr, tl_ptr, Rw_ptr, tw_ptr, N, B: tl.constexpr, BLOCK_N: tl.constexpr):
        frame = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = frame < N
        for b in range(B):
            p = tl.load(parents_ptr + b)
            l00, l01, l02, l10, l11, l12, l20, l21, l22, m0, m1, m2 = _load_pose(Rl_ptr, tl_ptr, frame, b, B, mask)
            a00, a01, a02, a10, a11, a12, a20, a21, a22, s0, s1, s2 = _load_parent(Rw_ptr, tw_ptr, frame, p, B, mask)
            _store_pose(
                Rw_ptr, tw_ptr, frame, b, B, mask,
                a00 * l00 + a01 * l10 + a02 * l20, a00 * l01 + a01 * l11 + a02 * l21, a00 * l02 + a01 * l12 + a02 * l22,
                a10 * l00 + a11 * l10 + a12 * l20, a10 * l01 + a11 * l11 + a12 * l21, a10 * l02 + a11 * l12 + a12 * l22,
                a20 * l00 + a21 * l10 + a22 * l20, a20 * l01 + a21 * l11 + a22 * l21, a20 * l02 + a21 * l12 + a22 * l22,
                a00 * m0 + a01 * m1 + a02 * m2 + s0, a10 * m0 + a11 * m1 + a12 * m2 + s1, a20 * m0 + a21 * m1 + a22 * m2 + s2,
            )
            tl.debug_barrier()

    @triton.jit
    def _chain_bwd_kernel(
        parents_ptr, Rl_ptr, tl_ptr, Rw_ptr, gR_ptr, gt_ptr, dRl_ptr, dtl_ptr, N, B: tl.constexpr, BLOCK_N: tl.constexpr
    ):
        # gR/gt hold the accumulated adjoints of the world poses (initialised to the incoming
        # gradients by the caller); children (higher index) are finished before their parent.
        frame = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = frame < N
        for i in range(B):
            b = B - 1 - i
            p = tl.load(parents_ptr + b)
            has = (frame * 0 + p) >= 0
            pm = mask & has
            pp = tl.maximum(p, 0)
            g00, g01, g02, g10, g11, g12, g20, g21, g22, h0, h1, h2 = _load_pose(gR_ptr, gt_ptr, frame, b, B, mask)
            l00, l01, l02, l10, l11, l12, l20, l21, l22, m0, m1, m2 = _load_pose(Rl_ptr, tl_ptr, frame, b, B, mask)
            a00, a01, a02, a10, a11, a12, a20, a21, a22, _s0, _s1, _s2 = _load_parent(Rw_ptr, Rw_ptr, frame, p, B, mask)
            # dR_l = A^T G ; dt_l = A^T h
            _store_pose(
                dRl_ptr, dtl_ptr, frame, b, B, mask,
                a00 * g00 + a10 * g10 + a20 * g20, a00 * g01 + a10 * g11 + a20 * g21, a00 * g02 + a10 * g12 + a20 * g22,
                a01 * g00 + a11 * g10 + a21 * g20, a01 * g01 + a11 * g11 + a21 * g21, a01 * g02 + a11 * g12 + a21 * g22,
                a02 * g00 + a12 * g10 + a22 * g20, a02 * g01 + a12 * g11 + a22 * g21, a02 * g02 + a12 * g12 + a22 * g22,
                a00 * h0 + a10 * h1 + a20 * h2, a01 * h0 + a11 * h1 + a21 * h2, a02 * h0 + a12 * h1 + a22 * h2,
            )
            # parent adjoint += G L^T + h m^T ; += h
            q00, q01, q02, q10, q11, q12, q20, q21, q22, u0, u1, u2 = _load_pose(gR_ptr, gt_ptr, frame, pp, B, pm)
            _store_pose(
                gR_ptr, gt_ptr, frame, pp, B, pm,
                q00 + g00 * l00 + g01 * l01 + g02 * l02 + h0 * m0,
                q01 + g00 * l10 + g01 * l11 + g02 * l12 + h0 * m1,
                q02 + g00 * l20 + g01 * l21 + g02 * l22 + h0 * m2,
                q10 + g10 * l00 + g11 * l01 + g12 * l02 + h1 * m0,
                q11 + g10 * l10 + g11 * l11 + g12 * l12 + h1 * m1,
                q12 + g10 * l20 + g11 * l21 + g12 * l22 + h1 * m2,
                q20 + g20 * l00 + g21 * l01 + g22 * l02 + h2 * m0,
                q21 + g20 * l10 + g21 * l11 + g22 * l12 + h2 * m1,
                q22 + g20 * l20 + g21 * l21 + g22 * l22 + h2 * m2,
                u0 + h0, u1 + h1, u2 + h2,
            )
            tl.debug_barrier()


def _parents_tensor(parents: list[int], device) -> Tensor:
    return torch.tensor(list(parents), dtype=torch.int32, device=device)


def _flat(parents: list[int], R: Tensor, t: Tensor) -> tuple[Tensor, Tensor, int]:
    B = len(parents)
    Rf = R.reshape(-1, B, 3, 3).contiguous()
    tf_ = t.reshape(-1, B, 3).contiguous()
    return Rf, tf_, Rf.shape[0]


def _triton_forward(parents: list[int], R_local: Tensor, t_local: Tensor) -> tuple[Tensor, Tensor]:
    B = len(parents)
    Rl, tl_, N = _flat(parents, R_local, t_local)
    Rw = torch.empty_like(Rl)
    tw = torch.empty_like(tl_)
    if N:
        grid = (triton.cdiv(N, BLOCK),)
        _chain_fwd_kernel[grid](_parents_tensor(parents, Rl.device), Rl, tl_, Rw, tw, N, B=B, BLOCK_N=BLOCK)
    return Rw.reshape(R_local.shape), tw.reshape(t_local.shape)


def _triton_backward(parents, R_local, t_local, R_world, gR, gt) -> tuple[Tensor, Tensor]:
    B = len(parents)
    Rl, tl_, N = _flat(parents, R_local, t_local)
    Rw = R_world.reshape(-1, B, 3, 3).contiguous()
    aR = gR.reshape(-1, B, 3, 3).clone(memory_format=torch.contiguous_format)
    at = gt.reshape(-1, B, 3).clone(memory_format=torch.contiguous_format)
    dR = torch.empty_like(Rl)
    dt = torch.empty_like(tl_)
    if N:
        grid = (triton.cdiv(N, BLOCK),)
        _chain_bwd_kernel[grid](_parents_tensor(parents, Rl.device), Rl, tl_, Rw, aR, at, dR, dt, N, B=B, BLOCK_N=BLOCK)
    return dR.reshape(R_local.shape), dt.reshape(t_local.shape)


def compose_chain_backward_reference(
    parents, R_local: Tensor, t_local: Tensor, R_world: Tensor, gR: Tensor, gt: Tensor
) -> tuple[Tensor, Tensor]:
    """Reverse adjoint sweep in torch (the twin of the backward kernel). Shapes as the forward."""
    B = len(parents)
    aR = list(gR.unbind(-3))
    at = list(gt.unbind(-2))
    dR: list[Optional[Tensor]] = [None] * B
    dt: list[Optional[Tensor]] = [None] * B
    for b in reversed(range(B)):
        p = parents[b]
        if p < 0:
            dR[b], dt[b] = aR[b], at[b]
            continue
        A = R_world[..., p, :, :]
        dR[b] = A.transpose(-1, -2) @ aR[b]
        dt[b] = (A.transpose(-1, -2) @ at[b][..., None])[..., 0]
        aR[p] = aR[p] + aR[b] @ R_local[..., b, :, :].transpose(-1, -2) + at[b][..., :, None] * t_local[..., b, None, :]
        at[p] = at[p] + at[b]
    return torch.stack(dR, -3), torch.stack(dt, -2)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------
# custom ops


def _dense(x: Tensor) -> Tensor:
    """A fresh contiguous copy (custom op outputs may not alias inputs; the fake kernels promise
    contiguous outputs)."""
    return x.clone(memory_format=torch.contiguous_format)


@torch.library.custom_op("kinfunc::compose_chain", mutates_args=())
def compose_chain_op(parents: list[int], R_local: Tensor, t_local: Tensor) -> tuple[Tensor, Tensor]:
    """World poses ``(R (..., B, 3, 3), t (..., B, 3))`` from local ones (Triton or twin)."""
    if triton_runs_on(R_local):
        return _triton_forward(parents, R_local, t_local)
    R, t = compose_chain_reference(tuple(parents), R_local, t_local)
    return _dense(R), _dense(t)


@compose_chain_op.register_fake
def _(parents, R_local, t_local):
    # outputs are always dense (contiguous), whatever the inputs' strides (e.g. permuted views)
    return R_local.new_empty(R_local.shape), t_local.new_empty(t_local.shape)


@torch.library.custom_op("kinfunc::compose_chain_backward", mutates_args=())
def compose_chain_backward_op(
    parents: list[int], R_local: Tensor, t_local: Tensor, R_world: Tensor, gR: Tensor, gt: Tensor
) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`compose_chain_op` w.r.t. ``R_local``, ``t_local``."""
    if triton_runs_on(R_local):
        return _triton_backward(parents, R_local, t_local, R_world, gR, gt)
    dR, dt = compose_chain_backward_reference(parents, R_local, t_local, R_world, gR, gt)
    return _dense(dR), _dense(dt)


@compose_chain_backward_op.register_fake
def _(parents, R_local, t_local, R_world, gR, gt):
    return R_local.new_empty(R_local.shape), t_local.new_empty(t_local.shape)


def _setup_context(ctx, inputs, output):
    parents, R_local, t_local = inputs
    ctx.parents = parents
    ctx.save_for_backward(R_local, t_local, output[0])


def _backward(ctx, gR, gt):
    R_local, t_local, R_world = ctx.saved_tensors
    gR = torch.zeros_like(R_world) if gR is None else gR
    gt = torch.zeros_like(t_local) if gt is None else gt
    dR, dt = compose_chain_backward_op(ctx.parents, R_local, t_local, R_world, gR, gt)
    return None, dR, dt


compose_chain_op.register_autograd(_backward, setup_context=_setup_context)


def _to_front(x: Tensor, bdim: Optional[int], size: int) -> Tensor:
    if bdim is None:
        return x.unsqueeze(0).expand((size,) + tuple(x.shape))
    return x.movedim(bdim, 0)


def _batch_size(args, in_dims) -> int:
    for a, d in zip(args, in_dims):
        if d is not None:
            return a.shape[d]
    raise ValueError("vmap rule called without a batched input")


@compose_chain_op.register_vmap
def _(info, in_dims, parents, R_local, t_local):
    n = _batch_size((R_local, t_local), in_dims[1:])
    R = _to_front(R_local, in_dims[1], n)
    t = _to_front(t_local, in_dims[2], n)
    return compose_chain_op(parents, R, t), (0, 0)


@compose_chain_backward_op.register_vmap
def _(info, in_dims, parents, R_local, t_local, R_world, gR, gt):
    args = (R_local, t_local, R_world, gR, gt)
    n = _batch_size(args, in_dims[1:])
    moved = [_to_front(a, d, n) for a, d in zip(args, in_dims[1:])]
    return compose_chain_backward_op(parents, *moved), (0, 0)
