"""The IK objective as pure functions of ``(Z, theta)``.

Variables
---------
* ``Z (T, Cf)``: the free (unlocked) coordinates of every frame, in the order
  ``problem.free_names`` (rad / m). Locked coordinates stay at their value in ``q_fixed``.
* ``theta (K, P)``: shared parameters, one row per parameter set ``k`` (``K = 1`` when all
  trials share one subject). Layout of a row: ``[global_scale?, segment-scale params...,
  marker-offset params...]`` (dimensionless scale factors; offsets in metres, body frame,
  unscaled). Frame ``t`` uses row ``theta_index[t]``.

Residuals (their squared sum is the objective)
----------------------------------------------
* per frame ``t``: ``sqrt(w_m) * present_tm * (p_m(q_t, theta) - X_tm)`` for every marker
  (3 components, metres), ``sqrt(w_c) * (q_c - value_c)`` per coordinate task (rad or m), and
  ``sqrt(w_lim) * (q - clamp(q, lo, hi))`` per limited coordinate (zero inside the range);
* temporal smoothness (optional): ``sqrt(w_s) * (z_{t+1} - 2 z_t + z_{t-1})`` within a trial;
* priors on ``theta``: ``sqrt(w_p) * (theta - target)`` (offsets near nominal, scales near
  their target), diagonal.

Everything here is a pure function; :func:`frame_residuals` runs under ``vmap``/``jacfwd``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch
from torch import Tensor

from ..fk import full_coordinates, marker_positions
from ..model import Model

__all__ = [
    "IKProblem",
    "unpack_model",
    "frame_residual",
    "frame_residuals",
    "smooth_residuals",
    "prior_residuals",
    "objective",
]


@dataclasses.dataclass(frozen=True)
class IKProblem:
    """Everything the solvers need, as tensors (built by :func:`kinfunc.ik.solve.build_problem`).

    Shapes: ``T`` frames (all trials concatenated), ``M`` used markers, ``C`` coordinates,
    ``Cf`` free coordinates, ``K`` parameter sets, ``P`` shared parameters per set.
    """

    model: Model  # used markers only, solve dtype; frozen values of everything not in theta
    X: Tensor  # (T, M, 3) measured markers, metres, 0 where missing
    present: Tensor  # (T, M) 1.0 where measured, 0.0 where missing
    sqrt_w: Tensor  # (M,) sqrt of marker weights
    q_fixed: Tensor  # (C,) values of locked coordinates (and defaults elsewhere)
    coord_free: Tensor  # (C,) bool
    coord_pos: Tensor  # (C,) long: index into Z's last axis (0 for locked)
    free_names: tuple[str, ...]
    z_lo: Tensor  # (Cf,) lower bound of each free coordinate (-inf = none)
    z_hi: Tensor  # (Cf,)
    limit_index: Tensor  # (L,) long into Z's last axis: coordinates with enforced limits
    limit_sqrt_w: float
    task_index: Tensor  # (Kc,) long into full coordinates [q, dependents]
    task_value: Tensor  # (T, Kc) target of each coordinate task in each frame
    task_sqrt_w: Tensor  # (Kc,)
    theta_index: Tensor  # (T,) long: parameter set of each frame
    trial_id: Tensor  # (T,) long: trial of each frame (smoothness never crosses trials)
    n_sets: int  # K
    n_theta: int  # P
    fit_global: bool
    scale_map: Tensor  # (B * 3,) long: index into the scale params, -1 = frozen
    n_scale: int
    offset_map: Tensor  # (M * 3,) long: index into the offset params, -1 = frozen
    n_offset: int
    prior_target: Tensor  # (P,)
    prior_sqrt_w: Tensor  # (P,)
    smooth_sqrt_w: float
    theta_names: tuple[str, ...] = ()
    free_index: Optional[Tensor] = None  # (Cf,) long: coordinate index of each free coordinate
    offset_select: Optional[Tensor] = None  # (M, 3, n_offset) 0/1: offset entry -> parameter
    smooth_rel: Optional[Tensor] = None  # (Cf,) factor of the smoothness weight per free coordinate (None = 1)
    plan: Any = None  # JacobianPlan for the free coordinates (kinfunc.ik.jacobian), built with the problem
    kinematics: Any = None  # ModelKinematics of `model` (kinfunc.ik.jacobian), made with the problem (None: computed where needed)

    @property
    def n_frames(self) -> int:
        return self.X.shape[0]

    @property
    def n_free(self) -> int:
        return len(self.free_names)

    @property
    def coupled(self) -> bool:
        """Whether frames interact (shared parameters or smoothness)."""
        return self.n_theta > 0 or self.smooth_sqrt_w > 0


def _scatter_params(base: Tensor, index_map: Tensor, params: Tensor) -> Tensor:
    """``base`` (any shape) with entries where ``index_map >= 0`` replaced by ``params[index_map]``."""
    flat = base.reshape(-1)
    vals = params[index_map.clamp(min=0)]
    return torch.where(index_map >= 0, vals, flat).reshape(base.shape)


def unpack_model(problem: IKProblem, theta: Optional[Tensor]) -> Model:
    """The model with shared parameters ``theta (P,)`` written in (``None``/empty: unchanged)."""
    model = problem.model
    if theta is None or problem.n_theta == 0:
        return model
    changes = {}
    i = 0
    if problem.fit_global:
        changes["global_scale"] = theta[0]
        i = 1
    if problem.n_scale:
        changes["body_scales"] = _scatter_params(model.body_scales, problem.scale_map, theta[i : i + problem.n_scale])
        i += problem.n_scale
    if problem.n_offset:
        changes["marker_offsets"] = _scatter_params(
            model.marker_offsets, problem.offset_map, theta[i : i + problem.n_offset]
        )
    return model.replace(**changes)


def expand_q(problem: IKProblem, z: Tensor) -> Tensor:
    """Full coordinates ``(..., C)`` from free ones ``z (..., Cf)`` (locked ones from ``q_fixed``)."""
    if z.shape[-1] == problem.q_fixed.shape[-1]:  # nothing locked: the free coordinates are all, in order
        return z
    return torch.where(problem.coord_free, z[..., problem.coord_pos], problem.q_fixed)


def frame_residual(
    problem: IKProblem, z: Tensor, theta: Optional[Tensor], x: Tensor, present: Tensor, task_value: Optional[Tensor] = None
) -> Tensor:
    """Residuals of one frame ``(R,)``: ``z (Cf,)``, ``theta (P,)`` or ``None``, ``x (M, 3)``, ``present (M,)``,
    ``task_value (Kc,)`` the frame's coordinate-task targets (may be left out when every target
    is constant over time).

    ``R = 3 M + Kc + L`` (markers, coordinate tasks, limits); see the module docstring.
    """
    if task_value is None:
        tv = problem.task_value
        if tv.shape[0] and not bool((tv == tv[:1]).all()):
            raise ValueError("frame_residual: this problem's coordinate-task targets vary by frame; pass the frame's task_value")
        task_value = tv[0] if tv.shape[0] else tv.new_zeros(tv.shape[-1])
    model = unpack_model(problem, theta)
    q = expand_q(problem, z)
    p = marker_positions(model, q)
    parts = [((problem.sqrt_w * present)[:, None] * (p - x)).reshape(-1)]
    if problem.task_index.numel():
        qf = full_coordinates(model, q)
        parts.append(problem.task_sqrt_w * (qf[problem.task_index] - task_value))
    if problem.limit_index.numel():
        zl = z[problem.limit_index]
        lo, hi = problem.z_lo[problem.limit_index], problem.z_hi[problem.limit_index]
        parts.append(problem.limit_sqrt_w * (zl - torch.clamp(zl, lo, hi)))
    return torch.cat(parts)


def frame_residuals(problem: IKProblem, Z: Tensor, theta: Optional[Tensor]) -> Tensor:
    """Residuals of all frames ``(T, R)`` at ``Z (T, Cf)`` and ``theta (K, P)`` (or ``None``).

    One batched FK pass when all frames share one parameter set; ``vmap`` over frames of
    :func:`frame_residual` otherwise (each frame its own model).
    """
    from torch.func import vmap

    if problem.n_theta and theta is not None and problem.n_sets != 1:
        th = theta[problem.theta_index]
        f = lambda z, t, x, m, v: frame_residual(problem, z, t, x, m, v)  # noqa: E731
        return vmap(f)(Z, th, problem.X, problem.present, problem.task_value)
    model = unpack_model(problem, theta[0] if (problem.n_theta and theta is not None) else None)
    q = expand_q(problem, Z)
    p = marker_positions(model, q)
    T = Z.shape[0]
    parts = [((problem.sqrt_w * problem.present)[..., None] * (p - problem.X)).reshape(T, -1)]
    if problem.task_index.numel():
        qf = full_coordinates(model, q)
        parts.append(problem.task_sqrt_w * (qf[:, problem.task_index] - problem.task_value))
    if problem.limit_index.numel():
        zl = Z[:, problem.limit_index]
        lo, hi = problem.z_lo[problem.limit_index], problem.z_hi[problem.limit_index]
        parts.append(problem.limit_sqrt_w * (zl - torch.clamp(zl, lo, hi)))
    return torch.cat(parts, -1)


def smooth_valid(problem: IKProblem) -> Tensor:
    """``(T - 2,)`` float: 1 where frames ``t, t+1, t+2`` belong to one trial."""
    tid = problem.trial_id
    return ((tid[2:] == tid[:-2]) & (tid[1:-1] == tid[:-2])).to(problem.X.dtype)


def smooth_residuals(problem: IKProblem, Z: Tensor) -> Tensor:
    """Second differences of the free coordinates ``(T - 2, Cf)`` times ``sqrt(w_s)`` (0 across trials)."""
    if Z.shape[0] < 3:
        return Z[:0]
    d2 = Z[2:] - 2.0 * Z[1:-1] + Z[:-2]
    out = problem.smooth_sqrt_w * d2 * smooth_valid(problem)[:, None]
    return out if problem.smooth_rel is None else out * problem.smooth_rel.sqrt()


def prior_residuals(problem: IKProblem, theta: Tensor) -> Tensor:
    """``sqrt(w_p) * (theta - target)`` ``(K, P)``."""
    return problem.prior_sqrt_w * (theta - problem.prior_target)


def coupling_cost(problem: IKProblem, Z: Tensor, theta: Optional[Tensor]) -> Tensor:
    """The terms that are not per-frame (scalar): smoothness and the priors on shared parameters."""
    total = Z.new_zeros(())
    if problem.smooth_sqrt_w > 0:
        s = smooth_residuals(problem, Z)
        total = total + (s * s).sum()
    if problem.n_theta and theta is not None:
        pr = prior_residuals(problem, theta)
        total = total + (pr * pr).sum()
    return total


def objective(problem: IKProblem, Z: Tensor, theta: Optional[Tensor]) -> Tensor:
    """The total objective (scalar): sum of all squared residuals (markers in m², weighted)."""
    r = frame_residuals(problem, Z, theta)
    return (r * r).sum() + coupling_cost(problem, Z, theta)
