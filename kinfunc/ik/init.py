"""Initial poses for IK: a rigid (Kabsch) fit of the root body per frame, nothing sequential.

Every frame is fitted independently (one batched Procrustes fit). Frames with fewer than three usable
root markers take the rotation of the nearest frame (in time) that has three, and a
translation that puts the markers they do have in place (or that frame's translation when
none is present). Coordinates other than the root's stay at their defaults.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from .. import functions as F
from .. import transforms as tf
from ..fk import fk, marker_positions
from ..model import Model, Topology
from .jacobian import JointFrames, ModelKinematics

__all__ = ["kabsch", "rigid_root_fit", "root_coordinates", "initial_q"]


def _svd_rotation(H: Tensor) -> Tensor:
    """:func:`procrustes_rotation` by the SVD (any ``H``, rank-deficient or reflecting)."""
    U, _, Vh = torch.linalg.svd(H)
    V = Vh.transpose(-1, -2)
    d = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    Dm = torch.diag_embed(torch.stack((torch.ones_like(d), torch.ones_like(d), d), -1))
    return V @ Dm @ U.transpose(-1, -2)


def _cofactor_rows(Y: Tensor) -> Tensor:
    """Cofactors ``(9, n)`` of 3 x 3 matrices given as their row-major entries ``Y (9, n)``
    (``cof X = det(X) X^-T``): entry ``(i, j)`` is ``X[i1, j1] X[i2, j2] - X[i1, j2] X[i2, j1]``
    with ``(i1, i2)``, ``(j1, j2)`` the cyclic successors of ``i``, ``j``."""
    e = Y.unbind(0)
    return torch.stack([
        e[3 * ((i + 1) % 3) + (j + 1) % 3] * e[3 * ((i + 2) % 3) + (j + 2) % 3]
        - e[3 * ((i + 1) % 3) + (j + 2) % 3] * e[3 * ((i + 2) % 3) + (j + 1) % 3]
        for i in range(3) for j in range(3)
    ])


def _polar_rotation(Y: Tensor, iters: int = 8) -> tuple[Tensor, Tensor]:
    """The orthogonal polar factor of 3 x 3 matrices given as row-major entries ``Y (9, n)``
    by scaled Newton iteration ``X <- (g X + X^-T / g) / 2`` (Higham) in elementwise arithmetic,
    and ``ok (n,)``: the iteration reached an orthogonal matrix."""
    for _ in range(iters):
        cof = _cofactor_rows(Y)
        det = (Y[:3] * cof[:3]).sum(0)
        det = torch.where(det.abs() > 1e-30, det, torch.ones_like(det))
        inv_t = cof / det  # X^-T
        g = ((inv_t * inv_t).sum(0) / (Y * Y).sum(0)).sqrt().sqrt()
        Y = 0.5 * (g * Y + inv_t / g)
    R = Y.t().reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=Y.dtype, device=Y.device)
    err = (R.transpose(-1, -2) @ R - eye).flatten(-2).abs().amax(-1)
    tol = 1e-9 if Y.dtype == torch.float64 else 1e-4
    return R, err < tol


def procrustes_rotation(H: Tensor) -> Tensor:
    """The proper rotation ``R (..., 3, 3)`` maximising ``tr(R H)`` for the cross-covariance
    ``H = sum_i w_i p_i x_i^T (..., 3, 3)`` (i.e. best turning the ``p`` onto the ``x``):
    ``V diag(1, 1, det) U^T`` from the SVD ``H = U S V^T``, never a reflection.

    Computed without the SVD where possible (5-10x faster batched): with ``H`` scaled to unit
    norm, ``H + cof(H) = U diag(s1 + d s2 s3, s2 + d s1 s3, s3 + d s1 s2) V^T``
    (``d = det U det V``) has the same singular vectors, so its orthogonal polar factor,
    transposed, is the answer wherever that factor is a rotation: always when ``det H > 0``, at
    rank 2 (two points about a joint centre, where ``H`` alone has no unique polar factor), and
    for a reflection to undo when only the smallest entry turns negative. The other frames (a
    reflection of an evenly spread cloud, collinear points) take the SVD."""
    shape = H.shape
    n = H.numel() // 9
    if n == 0:
        return H.new_zeros(shape)
    Y = H.reshape(n, 9).t()
    Y = Y / (Y * Y).sum(0).sqrt().clamp_min(torch.finfo(H.dtype).tiny)
    # transpose (entries (i, j) -> (j, i)): the polar factor of H^T + cof(H)^T
    Yt = (Y + _cofactor_rows(Y)).reshape(3, 3, n).transpose(0, 1).reshape(9, n)
    R, ok = _polar_rotation(Yt)
    # det(H + cof H) = d prod(s_i + d s_j s_k) has the sign of the polar factor's determinant
    # (> 0: a rotation) and is (s1 s2)^2 at rank 2: small for (nearly) collinear points
    det_x = (Yt[:3] * _cofactor_rows(Yt)[:3]).sum(0)
    ok = ok & (det_x > (1e-8 if H.dtype == torch.float64 else 1e-4))
    if not bool(ok.all()):
        bad = torch.nonzero(~ok).flatten()
        R = R.index_copy(0, bad, _svd_rotation(H.reshape(n, 3, 3).index_select(0, bad)))
    return R.reshape(shape)


def kabsch(P: Tensor, X: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted rigid fit ``X ~ R P + t`` per frame.

    ``P (..., M, 3)`` points in the body frame, ``X (..., M, 3)`` measured (any finite value
    where ``w == 0``), ``w (..., M)`` non-negative weights. Returns ``R (..., 3, 3)``,
    ``t (..., 3)`` and ``ok (...)`` (at least 3 points with weight > 0).
    """
    ok = (w > 0).sum(-1) >= 3
    ws = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    cP = (ws[..., None] * P).sum(-2)
    cX = (ws[..., None] * X).sum(-2)
    H = ((P - cP[..., None, :]) * ws[..., None]).transpose(-1, -2) @ (X - cX[..., None, :])
    R = procrustes_rotation(H)
    t = cX - (R @ cP[..., None])[..., 0]
    return R, t, ok


def _robust_template_fit(P: Tensor, X: Tensor, present: Tensor, on_root: list, rounds: int = 4,
                         scale: float = 0.10) -> tuple[Tensor, Tensor, Tensor]:
    """Root pose from every marker's template ``P (M, 3)`` (root frame, model at its default
    pose) when the root has fewer than 3 markers of its own (keypoints: two hips): the root's
    markers weigh 10 times more, and markers far from their template (limbs away from the
    default pose: a squat, arms overhead) are down-weighted by a Cauchy loss of ``scale`` (m),
    so the trunk's markers, which stay near their template, settle the rotation the root's
    markers leave open. Returns ``R (T, 3, 3)``, ``t (T, 3)``, ``ok (T,)``."""
    base = present * torch.tensor([10.0 if r else 1.0 for r in on_root], dtype=present.dtype, device=X.device)
    Xz = torch.where(present[..., None] > 0, X, torch.zeros_like(X))
    Pt = P.expand(X.shape[0], -1, -1)
    w = base
    for _ in range(rounds):
        R, t, ok = kabsch(Pt, Xz, w)
        d = torch.linalg.vector_norm((Pt @ R.transpose(-1, -2)) + t[:, None] - Xz, dim=-1)
        w = base / (1.0 + (d / scale) ** 2)
    return R, t, ok


def _nearest_valid(ok: Tensor) -> Tensor:
    """``(T,)`` index of the nearest frame with ``ok`` (itself if ok; 0 if none is ok). O(T), no loops."""
    T = ok.shape[0]
    idx = torch.arange(T, device=ok.device)
    prev = torch.where(ok, idx, torch.full_like(idx, -1)).cummax(0).values
    nxt = torch.where(ok, idx, torch.full_like(idx, T)).flip(0).cummin(0).values.flip(0)
    dp = torch.where(prev >= 0, idx - prev, torch.full_like(idx, 2 * T + 1))
    dn = torch.where(nxt < T, nxt - idx, torch.full_like(idx, 2 * T + 1))
    return torch.where(dp <= dn, prev, nxt).clamp(0, max(T - 1, 0))


def rigid_root_fit(model: Model, X: Tensor, present: Tensor, q0: Tensor) -> tuple[Tensor, Tensor]:
    """World pose of the root body per frame from its markers: ``R (T, 3, 3)``, ``t (T, 3)``.

    ``X (T, M, 3)`` metres (markers in ``model.marker_names`` order, any value where missing),
    ``present (T, M)`` 0/1, ``q0 (C,)`` the pose whose marker layout is the template. Uses the
    markers on the root body when the model has at least 3, otherwise all markers (with the
    model at ``q0``).
    """
    topo = model.topology
    root = [i for i, b in enumerate(topo.marker_bodies) if b == 0]

    def template():
        """Root pose at ``q0`` and every marker in the root frame there, ``R0^T (p - t0)``."""
        poses = fk(model, q0)
        return poses, (marker_positions(model, q0, poses) - poses.t[0]) @ poses.R[0]

    poses = None
    if len(root) >= 3:
        # root markers sit at their (scaled) offsets in the root frame: no FK for the fit itself
        ri = torch.tensor(root, device=X.device)
        P = model.marker_offsets.index_select(0, ri) * (model.global_scale * model.body_scales[0])
        Xr, wr = X.index_select(1, ri), present.index_select(1, ri)
        R, t, ok = kabsch(P.expand(X.shape[0], -1, -1), torch.where(wr[..., None] > 0, Xr, torch.zeros_like(Xr)), wr)
    else:
        poses, P = template()
        R, t, ok = _robust_template_fit(P, X, present, [b == 0 for b in topo.marker_bodies])
    if bool(ok.all()):
        return R, t
    # fallbacks below use every marker's template and the root pose at q0
    on_root = torch.tensor([b == 0 or len(root) < 3 for b in topo.marker_bodies], dtype=present.dtype, device=X.device)
    w = present * on_root
    if poses is None:
        poses, P = template()
    R0, t0 = poses.R[0], poses.t[0]
    # frames with < 3 root markers: rotation of the nearest good frame (or the template's)
    near = _nearest_valid(ok)
    any_ok = ok.any()
    R_fb = torch.where(any_ok, R[near], R0.expand_as(R))
    t_fb = torch.where(any_ok, t[near], t0.expand_as(t))
    # translation from whatever root markers (or any markers) the frame has
    w_any = torch.where((w.sum(-1, keepdim=True) > 0), w, present)
    n_any = w_any.sum(-1)
    wn = w_any / n_any.clamp_min(torch.finfo(w.dtype).tiny)[:, None]
    cX = (wn[..., None] * torch.where(w_any[..., None] > 0, X, torch.zeros_like(X))).sum(-2)
    cP = (wn[..., None] * P).sum(-2)
    t_c = cX - (R_fb @ cP[..., None])[..., 0]
    t_fb = torch.where((n_any > 0)[:, None], t_c, t_fb)
    R = torch.where(ok[:, None, None], R, R_fb)
    t = torch.where(ok[:, None], t, t_fb)
    return R, t


@functools.lru_cache(maxsize=32)
def _root_links(topo: Topology) -> tuple[tuple[int, int, int, int], ...]:
    """For the root joint, its slots that are a linear function of one independent coordinate:
    ``(slot, coordinate, slot group, position in the group)`` each (static, per topology)."""
    C = topo.n_coordinates
    out: dict[int, tuple[int, int, int, int]] = {}
    for gi, g in enumerate(topo.slot_groups):
        if g.key[0] is not F.FnKind.LINEAR:
            continue
        for k, (o, i) in enumerate(zip(g.outputs, g.inputs)):
            if o < 6 and i < C:
                out[o] = (o, i, gi, k)
    return tuple(out[s_] for s_ in sorted(out))


def linear_params(model: Model, refs) -> tuple[Tensor, Tensor]:
    """Slopes and intercepts ``(n,)`` of the linear slot functions at ``refs`` (``(slot group,
    position in it)`` each): one selection per group."""
    if not refs:
        z = model.axes.new_zeros(0)
        return z, z
    groups = sorted({g for g, _ in refs})
    parts = []
    for g in groups:
        idx = torch.tensor([k for gg, k in refs if gg == g], device=model.device)
        parts.append(torch.stack(model.slot_params[g][:2]).index_select(1, idx))
    out = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    if len(groups) > 1:  # back to the order of refs
        at = {r: j for j, r in enumerate((g, k) for g in groups for gg, k in refs if gg == g)}
        out = out.index_select(1, torch.tensor([at[r] for r in refs], device=model.device))
    return out[0], out[1]


def _root_frame(model: Model, frames: JointFrames):
    """What :func:`root_coordinates` needs from the model, or ``None`` when the root joint has no
    closed form: ``(Qr, flip, Rp, Rc, tp, tc, A_inv, coords, slots, slope, icpt)``."""
    linked = _root_links(model.topology)
    if model.topology.parents[0] != -1 or not linked or len({c for _, c, _, _ in linked}) != len(linked):
        return None
    axes = frames.axes[0]  # (6, 3)
    Qr = axes[:3].T  # columns = rotation axes
    if float((Qr.T @ Qr - torch.eye(3, dtype=Qr.dtype, device=Qr.device)).abs().max()) > 1e-9:
        return None
    flip = float(torch.linalg.det(Qr)) < 0
    if flip:
        Qr = torch.cat((Qr[:, :2], -Qr[:, 2:]), 1)
    lt = lambda x: torch.tensor(x, dtype=torch.long, device=Qr.device)  # noqa: E731
    slope, icpt = linear_params(model, [(g, k) for _, _, g, k in linked])
    return (
        Qr,
        flip,
        frames.Rp[0],
        frames.Rc[0],
        model.parent_location[0],  # ground: unscaled
        model.child_location[0] * (model.global_scale * model.body_scales[0]),
        torch.linalg.inv(axes[3:].T),  # slot values from a translation (unscaled by ground = 1)
        lt([c for _, c, _, _ in linked]),
        lt([s_ for s_, _, _, _ in linked]),
        slope,
        icpt,
    )


def root_coordinates(
    model: Model, R: Tensor, t: Tensor, q0: Tensor, kinematics: Optional[ModelKinematics] = None
) -> Tensor:
    """Coordinates ``(T, C)`` (``q0`` elsewhere) putting the root body at ``R (T, 3, 3)``, ``t (T, 3)``.

    Solved in closed form when the root joint's three rotation axes are orthogonal and its
    translation axes independent (OpenSim's free/pelvis joints, planar ones included): each slot
    that is a linear function of its own coordinate sets that coordinate; slots with constant
    values set nothing (for a planar pelvis the fitted pose is projected onto its DOFs).
    Otherwise the root coordinates stay at ``q0``. ``kinematics``: ``model``'s
    :class:`~kinfunc.ik.jacobian.ModelKinematics` (what is derived from the model is then
    computed once per solve), else it is computed here.
    """
    T = R.shape[0]
    q = q0.expand(T, -1)
    if kinematics is None:
        frame = _root_frame(model, JointFrames.of(model))
    else:
        frame = kinematics.derived(_root_frame, lambda kin: _root_frame(kin.model, kin.frames))
    if frame is None:
        return q.clone()
    Qr, flip, Rp, Rc, tp, tc, A_inv, coords, slots, slope, icpt = frame
    # R = Rp M Rc^T  ->  M = Rp^T R Rc ; M = Q Rx(a) Ry(b) Rz(c) Q^T
    M = Rp.T @ R @ Rc
    ang = tf.matrix_to_euler_xyz(Qr.T @ M @ Qr)  # (T, 3)
    if flip:
        ang = torch.cat((ang[:, :2], -ang[:, 2:]), 1)
    # t = Rp (tm - M tc) + tp  ->  tm = Rp^T (t - tp) + M tc ; tm = A v (columns = translation axes)
    tm = (t - tp) @ Rp + M @ tc
    vals = torch.cat((ang, tm @ A_inv.T), 1)  # (T, 6) slot values
    # slots with constant values (e.g. a planar root's) set nothing
    return q.index_copy(1, coords, (vals.index_select(1, slots) - icpt) / slope)


def initial_q(
    model: Model, X: Tensor, present: Tensor, q0: Tensor, kinematics: Optional[ModelKinematics] = None
) -> Tensor:
    """Initial coordinates ``(T, C)``: root from a per-frame rigid fit, the rest at ``q0 (C,)``
    (``kinematics``: as for :func:`root_coordinates`)."""
    R, t = rigid_root_fit(model, X, present, q0)
    return root_coordinates(model, R, t, q0, kinematics)
