"""Forward kinematics: pure functions of ``(model, q)``.

``q (..., C)`` holds the independent coordinates in ``model.coordinate_names`` order (rad for
rotational, m for translational); leading dimensions (frames, batches) broadcast. All joints'
local transforms are computed in one vectorised pass, then composed level by level.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from . import functions as F
from . import transforms as tf
from .kernels import compose_chain
from .model import Model

__all__ = [
    "Poses",
    "fk",
    "marker_positions",
    "full_coordinates",
    "slot_values",
    "local_transforms",
    "effective_scales",
    "translation_scales",
    "translation_factors",
    "translation_weights",
]


class Poses(NamedTuple):
    """World poses of all bodies: ``R (..., B, 3, 3)``, ``t (..., B, 3)`` (ground frame, m)."""

    R: Tensor
    t: Tensor


def _run_groups(groups, params, u_full: Tensor, n_out: int) -> Tensor:
    """Evaluate function groups at inputs from ``u_full (..., N)`` -> ``(..., n_out)`` (0 where none)."""
    batch = u_full.shape[:-1]
    vals = []
    where = [n_out] * n_out  # column per output in cat(values..., zero)
    col = 0
    for g, p in zip(groups, params):
        if g.key[0] is F.FnKind.CONSTANT:
            u = u_full.new_zeros(batch + (len(g.outputs),))
        else:
            u = u_full[..., list(g.inputs)]
        vals.append(F.evaluate(g.key, p, u))
        for o in g.outputs:
            where[o] = col
            col += 1
    for k in range(n_out):
        if where[k] == n_out:
            where[k] = col
    vals.append(u_full.new_zeros(batch + (1,)))
    return torch.cat(vals, -1)[..., where]


def full_coordinates(model: Model, q: Tensor) -> Tensor:
    """``[q, dependents(q)]``: ``q (..., C)`` -> ``(..., C + D)`` with coupled coordinates appended."""
    topo = model.topology
    if not topo.dependent_names:
        return q
    dep = _run_groups(topo.coupler_groups, model.coupler_params, q, len(topo.dependent_names))
    return torch.cat((q, dep), -1)


def slot_values(model: Model, q: Tensor) -> Tensor:
    """Joint slot values ``(..., B, 6)``: 3 rotation angles (rad) then 3 unscaled translations (m)."""
    topo = model.topology
    B = topo.n_bodies
    v = _run_groups(topo.slot_groups, model.slot_params, full_coordinates(model, q), B * 6)
    return v.reshape(v.shape[:-1] + (B, 6))


def effective_scales(model: Model, s_body: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(s_body (..., B, 3), s_parent (..., B, 3))``: each body's total scale and its parent's
    (1 for ground). ``s_body``: total scales to use instead of the model's
    ``global_scale * body_scales`` (e.g. one set per subject, with batch dimensions)."""
    if s_body is None:
        s_body = model.global_scale * model.body_scales
    ones = torch.ones_like(s_body[..., :1, :])
    s_all = torch.cat((ones, s_body), -2)
    s_parent = s_all[..., [p + 1 for p in model.topology.parents], :]
    return s_body, s_parent


def translation_scales(model: Model, s_parent: Tensor | None = None) -> Tensor:
    """Factor ``(B, 3)`` multiplying each joint's translation slots (OpenSim ScaleTool rule).

    Slot ``k`` of joint ``b`` with axis ``a`` scales by the ``|a|``-weighted mean of the parent
    body's scale factors, ``|a| . s_parent / sum(|a|)`` (component ``k`` for the canonical
    axes); slots in ``topology.unscaled_slots`` (identity translations, i.e. DOFs) by 1.
    ``s_parent``: the parents' scales ``(B, 3)`` if already computed (:func:`effective_scales`).
    """
    if s_parent is None:
        s_parent = effective_scales(model)[1]
    return translation_factors(model.axes, s_parent, model.topology.unscaled_slots)


def translation_weights(axes: Tensor, unscaled_slots: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """The linear map of :func:`translation_factors`: ``W (B, 3, 3)`` with ``W[b, k, :]`` the
    ``|axis|``-weights of translation slot ``k`` over the parent's three scale factors (0 for
    ``unscaled_slots``, flat ``joint * 3 + k``), and ``keep (B, 3)`` (0 there, else 1).
    ``axes (B, 6, 3)``."""
    w = axes[:, 3:].abs()
    W = w / w.sum(-1, keepdim=True)
    keep = torch.ones_like(W[..., 0])
    if unscaled_slots:
        off = set(unscaled_slots)
        keep = torch.tensor(
            [0.0 if i in off else 1.0 for i in range(keep.numel())], dtype=W.dtype, device=W.device
        ).reshape(keep.shape)
    return W * keep[..., None], keep


def translation_factors(axes: Tensor, s_parent: Tensor, unscaled_slots: tuple[int, ...]) -> Tensor:
    """The rule of :func:`translation_scales` on raw leaves: ``axes (B, 6, 3)``,
    ``s_parent (..., B, 3)``, static ``unscaled_slots`` (flat ``joint * 3 + k``) -> ``(..., B, 3)``."""
    W, keep = translation_weights(axes, unscaled_slots)
    return (W * s_parent[..., :, None, :]).sum(-1) + (1.0 - keep)


def local_transforms(model: Model, q: Tensor, s_body: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Pose of every body in its parent body ``(R (..., B, 3, 3), t (..., B, 3))`` at ``q (..., C)``.

    The one place that encodes a joint: slot rotations about their axes, slot translations
    scaled by the parent's scale factors (OpenSim's rule), the joint frames in parent and child.
    ``s_body (..., B, 3)``: total body scales replacing the model's (batch dimensions broadcast
    with ``q``'s)."""
    v = slot_values(model, q)
    s_body, s_parent = effective_scales(model, s_body)
    axes = model.axes / torch.linalg.vector_norm(model.axes, dim=-1, keepdim=True)  # (B, 6, 3)
    K = tf.skew(axes[:, :3])  # (B, 3, 3, 3)
    K2 = K @ K
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    ang = v[..., :3]
    s = torch.sin(ang)[..., None, None]
    c = torch.cos(ang)[..., None, None]
    Rk = eye + s * K + (1.0 - c) * K2  # (..., B, 3, 3, 3)
    Rm = Rk[..., 0, :, :] @ Rk[..., 1, :, :] @ Rk[..., 2, :, :]
    s_tr = translation_scales(model, s_parent)
    tm = ((v[..., 3:] * s_tr)[..., None] * axes[:, 3:]).sum(-2)  # (..., B, 3)
    Rp = tf.euler_xyz_to_matrix(model.parent_orientation)
    Rc = tf.euler_xyz_to_matrix(model.child_orientation)
    tp = model.parent_location * s_parent
    tc = model.child_location * s_body
    RmRc = Rm @ Rc.transpose(-1, -2)
    R = Rp @ RmRc
    t = (Rp @ (tm - (RmRc @ tc[..., None])[..., 0])[..., None])[..., 0] + tp
    batch = torch.broadcast_shapes(R.shape[:-3], t.shape[:-2])
    return R.expand(batch + R.shape[-3:]), t.expand(batch + t.shape[-2:])


def fk(model: Model, q: Tensor) -> Poses:
    """World poses of all bodies. ``q (..., C)`` -> ``Poses(R (..., B, 3, 3), t (..., B, 3))``.

    Pure and differentiable in ``q`` and every model leaf; works under ``torch.func``
    transforms and ``torch.compile(fullgraph=True)``.
    """
    R_loc, t_loc = local_transforms(model, q)
    R, t = compose_chain(model.topology.parents, R_loc, t_loc)
    return Poses(R, t)


def marker_positions(model: Model, q: Tensor, poses: Poses | None = None) -> Tensor:
    """Marker positions in ground ``(..., M, 3)`` (metres, order ``model.marker_names``).

    ``q (..., C)``; pass ``poses`` (from :func:`fk` at the same ``q``) to reuse them.
    """
    if poses is None:
        poses = fk(model, q)
    mb = list(model.topology.marker_bodies)
    s_body = model.global_scale * model.body_scales
    off = model.marker_offsets * s_body[mb]  # (M, 3)
    R = poses.R[..., mb, :, :]
    return (R @ off[..., None])[..., 0] + poses.t[..., mb, :]
