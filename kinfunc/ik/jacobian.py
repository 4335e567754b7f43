"""Analytic (geometric) Jacobians of marker positions, from the FK outputs.

For a marker ``p`` on a body below joint ``j``: a rotation slot of ``j`` turning about the
world axis ``w`` moves it by ``w x (p - c_j)`` per radian (``c_j`` the world origin of the
joint's child-side frame, about which the joint rotates); a translation slot moves it along
its world axis times its translation scale (:func:`kinfunc.fk.translation_scales`). Slot values depend on coordinates through the
joint functions and couplers, whose derivatives ``dv/dq`` come from forward mode on the
(cheap) function layer alone. A marker offset moves its marker by ``R_b diag(s_b)``.

Everything is batched over frames; the reference is ``torch.func.jacrev``/``jacfwd`` of
:func:`kinfunc.marker_positions` (tests check they agree in float64).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.func import jacfwd, vmap

from .. import transforms as tf
from ..fk import effective_scales, fk, full_coordinates, slot_values, translation_scales
from ..model import Model

__all__ = ["marker_jacobian", "ancestor_mask"]


def _cross(a: Tensor, b: Tensor) -> Tensor:
    """Cross product over the last axis with broadcasting (no expanded copies)."""
    a0, a1, a2 = a.unbind(-1)
    b0, b1, b2 = b.unbind(-1)
    return torch.stack((a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0), -1)


def ancestor_mask(model: Model) -> Tensor:
    """``(M, B)`` float: 1 where joint ``j`` lies on the path from ground to marker ``m``'s body."""
    topo = model.topology
    M, B = topo.n_markers, topo.n_bodies
    rows = []
    for b in topo.marker_bodies:
        row = [0.0] * B
        while b >= 0:
            row[b] = 1.0
            b = topo.parents[b]
        rows.append(row)
    return torch.tensor(rows, dtype=model.dtype, device=model.device).reshape(M, B)


def function_derivative(key: tuple, params: tuple[Tensor, ...], u: Tensor) -> Tensor:
    """Derivatives ``df/du (..., n)`` of a function group (see :func:`kinfunc.functions.evaluate`)
    at inputs ``u (..., n)``, in closed form (no autodiff)."""
    from ..functions import FnKind, spline_coefficients

    kind = key[0]
    if kind is FnKind.CONSTANT:
        return torch.zeros_like(u)
    if kind is FnKind.LINEAR:
        return params[0] + torch.zeros_like(u)
    if kind is FnKind.POLYNOMIAL:
        (coef,) = params
        out = coef[:, 0] + torch.zeros_like(u)
        d = torch.zeros_like(u)
        for k in range(1, coef.shape[1]):  # Horner for value and derivative together
            d = d * u + out
            out = out * u + coef[:, k]
        return d
    if kind is FnKind.SPLINE:
        xk, yk = params
        b, c, d = spline_coefficients(xk, yk, key[2])
        dx = u[..., None] - xk[:, :-1]  # (..., n, K-1)
        slope = b[:, :-1] + dx * (2.0 * c[:, :-1] + 3.0 * dx * d[:, :-1])
        idx = (u[..., None] >= xk[:, 1:-1]).sum(-1)
        onehot = (idx[..., None] == torch.arange(xk.shape[1] - 1, device=u.device)).to(u.dtype)
        inside = (slope * onehot).sum(-1)
        return torch.where(u < xk[:, 0], b[:, 0] + torch.zeros_like(u), torch.where(u > xk[:, -1], b[:, -1] + torch.zeros_like(u), inside))
    raise ValueError(f"unknown function kind {kind}")


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
        d = function_derivative(g.key, p, full[:, inp])  # (T, n)
        parts.append(d[..., None] * dfull[:, inp])
        where.extend(g.outputs)
    if not parts:
        return rows[:, :n_out]
    rows = rows.index_copy(1, torch.tensor(where, device=full.device), torch.cat(parts, 1))
    return rows[:, :n_out]


def slot_derivatives(model: Model, q: Tensor) -> Tensor:
    """``dv/dq (T, B, 6, C)``: derivatives of joint slot values w.r.t. coordinates ``q (T, C)``,
    chain rule through couplers and joint functions in closed form (:func:`function_derivative`)."""
    topo = model.topology
    full = full_coordinates(model, q)
    dfull = full_coordinate_derivatives(model, q)
    dv = _group_derivatives(topo.slot_groups, model.slot_params, full, dfull, topo.n_bodies * 6)
    return dv.reshape(q.shape[0], topo.n_bodies, 6, q.shape[-1])


def slot_derivatives_autodiff(model: Model, q: Tensor) -> Tensor:
    """Reference for :func:`slot_derivatives` by forward mode."""
    return vmap(jacfwd(lambda qq: slot_values(model, qq)))(q)


def slot_derivatives_constant(model: Model) -> Optional[Tensor]:
    """``dv/dq (B, 6, C)`` when every joint function and coupler is constant or linear (then it
    does not depend on ``q``; built from the slopes directly), else ``None``."""
    from ..functions import FnKind

    topo = model.topology
    groups = topo.slot_groups + topo.coupler_groups
    if any(g.key[0] not in (FnKind.CONSTANT, FnKind.LINEAR) for g in groups):
        return None
    C, D, B = topo.n_coordinates, len(topo.dependent_names), topo.n_bodies
    kw = dict(dtype=model.dtype, device=model.device)
    dfull = torch.cat((torch.eye(C, **kw), torch.zeros(D, C, **kw)), 0)  # d[q, dependents]/dq
    for g, params in zip(topo.coupler_groups, model.coupler_params):
        if g.key[0] is FnKind.LINEAR:
            for k, (o, i) in enumerate(zip(g.outputs, g.inputs)):
                dfull[C + o] = params[0][k] * dfull[i]
    dv = torch.zeros(B * 6, C, **kw)
    for g, params in zip(topo.slot_groups, model.slot_params):
        if g.key[0] is FnKind.LINEAR:
            for k, (o, i) in enumerate(zip(g.outputs, g.inputs)):
                dv[o] = dv[o] + params[0][k] * dfull[i]
    return dv.reshape(B, 6, C)


def marker_jacobian(model: Model, q: Tensor, dvdq: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Marker positions ``(T, M, 3)`` (m) and ``dp/dq (T, M, 3, C)`` at ``q (T, C)``.

    ``dvdq``: optional precomputed ``(B, 6, C)`` slot derivatives (see
    :func:`slot_derivatives_constant`), else computed by forward mode.
    """
    topo = model.topology
    poses = fk(model, q)
    Rw, tw = poses.R, poses.t  # (T, B, 3, 3), (T, B, 3)
    v = slot_values(model, q)  # (T, B, 6)
    if dvdq is None:
        dvdq = slot_derivatives(model, q)  # (T, B, 6, C)
    else:
        dvdq = dvdq[None]  # (1, B, 6, C), broadcast over frames
    s_body, s_parent = effective_scales(model)
    axes = model.axes / torch.linalg.vector_norm(model.axes, dim=-1, keepdim=True)  # (B, 6, 3)
    Rp = tf.euler_xyz_to_matrix(model.parent_orientation)  # (B, 3, 3)
    # world orientation of each joint's parent-side frame
    eye = torch.eye(3, dtype=q.dtype, device=q.device)
    par = [p + 1 for p in topo.parents]
    Rpar = torch.cat((eye.expand(q.shape[0], 1, 3, 3), Rw), 1)[:, par]  # (T, B, 3, 3)
    Rjp = Rpar @ Rp
    R1 = tf.axis_angle_to_matrix(axes[:, 0], v[..., 0])  # (T, B, 3, 3)
    R2 = tf.axis_angle_to_matrix(axes[:, 1], v[..., 1])
    A1 = Rjp
    A2 = Rjp @ R1
    A3 = A2 @ R2
    w = torch.stack(
        ((A1 @ axes[:, 0, :, None])[..., 0], (A2 @ axes[:, 1, :, None])[..., 0], (A3 @ axes[:, 2, :, None])[..., 0]), -2
    )  # (T, B, 3 slots, 3)
    s_tr = translation_scales(model, s_parent)  # (B, 3) OpenSim rule
    tau = (Rjp[:, :, None] @ (axes[:, 3:] * s_tr[:, :, None])[..., None])[..., 0]  # (T, B, 3, 3)
    c = (Rw @ (model.child_location * s_body)[..., None])[..., 0] + tw  # (T, B, 3)
    mb = list(topo.marker_bodies)
    off = model.marker_offsets * s_body[mb]
    p = (Rw[:, mb] @ off[..., None])[..., 0] + tw[:, mb]  # (T, M, 3)
    anc = ancestor_mask(model)  # (M, B)
    # sum over slots first: W[t, j, c] = sum_s dv_js/dq_c w_js (rotation), Tr likewise (translation)
    dvT = dvdq.transpose(-1, -2)  # (T or 1, B, C, 6)
    W = dvT[..., :3] @ w  # (T, B, C, 3)
    Tr = dvT[..., 3:] @ tau  # (T, B, C, 3)
    T, B, C = W.shape[0], W.shape[1], W.shape[2]
    U = _cross(W, c[:, :, None, :]) - Tr  # w x c_j - translation part
    Wm = (anc @ W.reshape(T, B, C * 3)).reshape(T, -1, C, 3)  # sum over ancestor joints
    Um = (anc @ U.reshape(T, B, C * 3)).reshape(T, -1, C, 3)
    J = _cross(Wm, p[:, :, None, :]) - Um  # (T, M, C, 3)
    J = J.transpose(-1, -2)
    return p, J


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


def offset_jacobian(model: Model, q: Tensor, poses=None) -> Tensor:
    """``dp_m/do_m (T, M, 3, 3)`` = ``R_b diag(s_b)`` for each marker's own offset."""
    if poses is None:
        poses = fk(model, q)
    s_body = model.global_scale * model.body_scales
    mb = list(model.topology.marker_bodies)
    return poses.R[:, mb] * s_body[mb][None, :, None, :]
