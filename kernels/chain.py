"""Pure-torch twin of the chain-composition kernel."""
from __future__ import annotations

import torch
from torch import Tensor

from ..tree import tree_schedule

__all__ = ["compose_chain", "compose_chain_reference", "tree_levels", "chain_op"]


def tree_levels(parents: tuple[int, ...]) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """Static schedule for ``parents`` (``parents[b] < b``, -1 = ground), from
    :func:`kinfunc.tree.tree_schedule`: per depth level ``(bodies, parent_positions)`` where
    ``parent_positions`` index into the concatenation of all earlier levels' bodies (-1 for
    ground)."""
    s = tree_schedule(tuple(parents))
    return tuple(zip(s.levels, s.parent_position))


def compose_chain_reference(parents: tuple[int, ...], R_local: Tensor, t_local: Tensor) -> tuple[Tensor, Tensor]:
    """Level-wise composition of local poses into world poses.

    ``parents``: static tuple, ``parents[b] < b`` (-1 = ground).
    ``R_local (..., B, 3, 3)``, ``t_local (..., B, 3)``: pose of body ``b`` in its parent.
    Returns world ``R (..., B, 3, 3)``, ``t (..., B, 3)``. One batched matmul per tree level.
    """
    levels = tree_levels(tuple(parents))
    Rs: list[Tensor] = []
    ts: list[Tensor] = []
    order: list[int] = []
    for bodies, ppos in levels:
        idx = list(bodies)
        Rl = R_local[..., idx, :, :]
        tl = t_local[..., idx, :]
        if not Rs:  # depth 0: children of ground
            Rw, tw = Rl, tl
        else:
            R_done = torch.cat(Rs, -3)
            t_done = torch.cat(ts, -2)
            Rp = R_done[..., list(ppos), :, :]
            tp = t_done[..., list(ppos), :]
            Rw = Rp @ Rl
            tw = (Rp @ tl[..., None])[..., 0] + tp
        Rs.append(Rw)
        ts.append(tw)
        order.extend(idx)
    inv = [0] * len(order)
    for k, b in enumerate(order):
        inv[b] = k
    R = torch.cat(Rs, -3)
    t = torch.cat(ts, -2)
    if inv != list(range(len(inv))):
        R = R[..., inv, :, :]
        t = t[..., inv, :]
    return R, t


def compose_chain(parents: tuple[int, ...], R_local: Tensor, t_local: Tensor) -> tuple[Tensor, Tensor]:
    """Compose local poses down the tree (see :func:`compose_chain_reference` for shapes).

    Dispatches to the fastest available implementation for the input's device: CUDA tensors
    go through the ``kinfunc::compose_chain`` custom op (the Triton kernel) when Triton is
    installed; everything else (CPU, or no Triton) runs the torch twin.
    """
    # torch.func transforms (grad/jacrev/...) cannot see through the op's autograd formula in
    # this torch version, so inside them the twin runs (vmap alone would work: it has a rule)
    op = chain_op(R_local)
    if op is not None and torch._C._functorch.peek_interpreter_stack() is None:
        R, t = op(list(parents), R_local, t_local)
        return R, t
    return compose_chain_reference(parents, R_local, t_local)


# Private switch for tests: route every chain composition (compose_chain, and the leaves form of
# kinfunc.compile_fk) through the custom op on any device; on the CPU the op runs the twin.
_FORCE_OP = False
_OP: list = []


def chain_op(x: Tensor):
    """The ``kinfunc::compose_chain`` custom op when it is the one to compose chains of tensors
    like ``x`` (CUDA with Triton installed, or forced), else None. Called outside traced code
    (``torch.compile`` callers decide once per device and bake the answer in)."""
    if _FORCE_OP:
        from . import triton_chain

        return triton_chain.compose_chain_op
    return _triton_op() if x.is_cuda else None


def _triton_op():
    """The Triton-backed custom op, or None when Triton is not installed (imported lazily)."""
    if not _OP:
        try:
            from . import triton_chain

            _OP.append(triton_chain.compose_chain_op if triton_chain.triton_available() else None)
        except Exception:  # pragma: no cover - broken optional install
            _OP.append(None)
    return _OP[0]
