"""Pure SO(3)/SE(3) operations on rotation matrices ``(..., 3, 3)`` and translations ``(..., 3)``.

Conventions (stated once, used everywhere):

* column vectors: a point ``p`` in frame B is ``R @ p + t`` in frame A for the pose
  ``(R, t) = T_A_B``;
* body-fixed X-Y-Z Euler angles ``(a, b, c)`` give ``R = Rx(a) @ Ry(b) @ Rz(c)`` (OpenSim's
  convention for frame orientations);
* quaternions are ``(w, x, y, z)`` with ``w`` first;
* a rotation vector is ``axis * angle`` (radians).

Every function broadcasts over leading dimensions, is differentiable, and gives finite
values and gradients at the identity and at rotations by pi.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "skew",
    "axis_angle_to_matrix",
    "rotvec_to_matrix",
    "matrix_to_rotvec",
    "euler_xyz_to_matrix",
    "matrix_to_euler_xyz",
    "quat_to_matrix",
    "matrix_to_quat",
    "quat_to_rotvec",
    "compose",
    "inverse",
    "apply",
    "to_homogeneous",
]


def skew(v: Tensor) -> Tensor:
    """Cross-product matrix: ``skew(v) @ u == cross(v, u)``. ``v (..., 3)`` -> ``(..., 3, 3)``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack(
        (torch.stack((o, -z, y), -1), torch.stack((z, o, -x), -1), torch.stack((-y, x, o), -1)), -2
    )


def _eye_like(x: Tensor) -> Tensor:
    return torch.eye(3, dtype=x.dtype, device=x.device)


def axis_angle_to_matrix(axis: Tensor, angle: Tensor) -> Tensor:
    """Rotation about a unit ``axis (..., 3)`` by ``angle (...)`` radians (right hand) -> ``(..., 3, 3)``.

    ``axis`` must already be unit length (Rodrigues: ``I + sin(a) K + (1 - cos(a)) K^2``).
    """
    k = skew(axis)
    s = torch.sin(angle)[..., None, None]
    c = torch.cos(angle)[..., None, None]
    return _eye_like(k) + s * k + (1.0 - c) * (k @ k)


def _safe_norm_sq_terms(theta2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(sin t / t, (1 - cos t) / t^2, t)`` from ``t^2`` with Taylor series near 0."""
    small = theta2 < 1e-8
    t2 = torch.where(small, torch.ones_like(theta2), theta2)
    t = torch.sqrt(t2)
    a = torch.where(small, 1.0 - theta2 / 6.0 + theta2 * theta2 / 120.0, torch.sin(t) / t)
    b = torch.where(small, 0.5 - theta2 / 24.0 + theta2 * theta2 / 720.0, (1.0 - torch.cos(t)) / t2)
    return a, b, torch.where(small, torch.zeros_like(t), t)


def rotvec_to_matrix(rotvec: Tensor) -> Tensor:
    """Exponential map: rotation vector ``(..., 3)`` (axis * angle) -> ``(..., 3, 3)``."""
    theta2 = (rotvec * rotvec).sum(-1)
    a, b, _ = _safe_norm_sq_terms(theta2)
    k = skew(rotvec)
    return _eye_like(k) + a[..., None, None] * k + b[..., None, None] * (k @ k)


def euler_xyz_to_matrix(angles: Tensor) -> Tensor:
    """Body-fixed X-Y-Z Euler angles ``(..., 3)`` -> ``Rx(a) @ Ry(b) @ Rz(c)`` ``(..., 3, 3)``."""
    a, b, c = angles.unbind(-1)
    ca, sa, cb, sb, cc, sc = a.cos(), a.sin(), b.cos(), b.sin(), c.cos(), c.sin()
    r00 = cb * cc
    r01 = -cb * sc
    r02 = sb
    r10 = sa * sb * cc + ca * sc
    r11 = -sa * sb * sc + ca * cc
    r12 = -sa * cb
    r20 = -ca * sb * cc + sa * sc
    r21 = ca * sb * sc + sa * cc
    r22 = ca * cb
    return torch.stack(
        (torch.stack((r00, r01, r02), -1), torch.stack((r10, r11, r12), -1), torch.stack((r20, r21, r22), -1)),
        -2,
    )


def matrix_to_euler_xyz(R: Tensor) -> Tensor:
    """Inverse of :func:`euler_xyz_to_matrix`: ``(..., 3, 3)`` -> ``(..., 3)`` with ``b`` in [-pi/2, pi/2].

    At gimbal lock (``|b| = pi/2``) the split between ``a`` and ``c`` is arbitrary (``a = 0``).
    """
    r02 = R[..., 0, 2].clamp(-1.0, 1.0)
    b = torch.asin(r02)
    a = torch.atan2(-R[..., 1, 2], R[..., 2, 2])
    c = torch.atan2(-R[..., 0, 1], R[..., 0, 0])
    lock = (R[..., 1, 2].abs() < 1e-12) & (R[..., 2, 2].abs() < 1e-12)
    a_lock = torch.zeros_like(a)
    c_lock = torch.atan2(R[..., 1, 0], R[..., 1, 1])
    return torch.stack((torch.where(lock, a_lock, a), b, torch.where(lock, c_lock, c)), -1)


def quat_to_matrix(q: Tensor) -> Tensor:
    """Quaternion ``(..., 4)`` as ``(w, x, y, z)`` (normalised here) -> ``(..., 3, 3)``."""
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        (
            torch.stack((1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)), -1),
            torch.stack((2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)), -1),
            torch.stack((2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)), -1),
        ),
        -2,
    )


def _sqrt_pos(x: Tensor) -> Tensor:
    """``sqrt(max(x, 0))`` with a zero (not NaN/inf) gradient where ``x <= 0``."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


def matrix_to_quat(R: Tensor) -> Tensor:
    """Rotation matrix ``(..., 3, 3)`` -> unit quaternion ``(..., 4)`` ``(w, x, y, z)`` with ``w >= 0``.

    Uses the best-conditioned of the four closed forms (largest diagonal term), so values and
    gradients stay finite at the identity and at rotations by pi.
    """
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    # 4 * (component)^2 for each of w, x, y, z
    sq = torch.stack(
        (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), -1
    )
    r = _sqrt_pos(sq)  # 2 * |component|
    d21, d02, d10 = R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]
    s10, s02, s21 = R[..., 1, 0] + R[..., 0, 1], R[..., 0, 2] + R[..., 2, 0], R[..., 2, 1] + R[..., 1, 2]
    # candidate i is 4*q_i * q (unnormalised) divided by 2 * r_i -> q
    cands = torch.stack(
        (
            torch.stack((sq[..., 0], d21, d02, d10), -1),
            torch.stack((d21, sq[..., 1], s10, s02), -1),
            torch.stack((d02, s10, sq[..., 2], s21), -1),
            torch.stack((d10, s02, s21, sq[..., 3]), -1),
        ),
        -2,
    )
    denom = 2.0 * torch.where(r > 0.1, r, torch.full_like(r, 0.1))
    cands = cands / denom[..., None]
    best = torch.argmax(sq, dim=-1)
    onehot = torch.nn.functional.one_hot(best, 4).to(R.dtype)
    q = (cands * onehot[..., None]).sum(-2)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_to_rotvec(q: Tensor) -> Tensor:
    """Unit quaternion ``(..., 4)`` (wxyz) -> rotation vector ``(..., 3)`` with angle in [0, pi]."""
    q = torch.where(q[..., :1] < 0, -q, q)
    w, v = q[..., 0], q[..., 1:]
    n2 = (v * v).sum(-1)
    small = n2 < 1e-12
    n = torch.sqrt(torch.where(small, torch.ones_like(n2), n2))
    scale = torch.where(small, 2.0 / w.clamp_min(1e-12) * (1.0 - n2 / (3.0 * w * w).clamp_min(1e-12)),
                        2.0 * torch.atan2(n, w) / n)
    return v * scale[..., None]


def matrix_to_rotvec(R: Tensor) -> Tensor:
    """Logarithm map: ``(..., 3, 3)`` -> rotation vector ``(..., 3)`` (angle in [0, pi])."""
    return quat_to_rotvec(matrix_to_quat(R))


def compose(R1: Tensor, t1: Tensor, R2: Tensor, t2: Tensor) -> tuple[Tensor, Tensor]:
    """``T1 @ T2``: ``(R1 R2, R1 t2 + t1)``. Shapes ``(..., 3, 3)`` and ``(..., 3)``."""
    return R1 @ R2, (R1 @ t2[..., None])[..., 0] + t1


def inverse(R: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """``T^-1``: ``(R^T, -R^T t)``. Shapes ``(..., 3, 3)`` and ``(..., 3)``."""
    Rt = R.transpose(-1, -2)
    return Rt, -(Rt @ t[..., None])[..., 0]


def apply(R: Tensor, t: Tensor, p: Tensor) -> Tensor:
    """Transform points: ``R p + t``; ``R (..., 3, 3)``, ``t (..., 3)``, ``p (..., 3)`` -> ``(..., 3)``."""
    return (R @ p[..., None])[..., 0] + t


def to_homogeneous(R: Tensor, t: Tensor) -> Tensor:
    """``(R (..., 3, 3), t (..., 3))`` -> 4x4 matrices ``(..., 4, 4)``."""
    top = torch.cat((R, t[..., None]), -1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom = torch.cat((bottom[..., :3], torch.ones_like(bottom[..., 3:])), -1)
    return torch.cat((top, bottom), -2)
