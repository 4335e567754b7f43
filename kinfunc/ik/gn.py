"""Batched Gauss-Newton / Levenberg-Marquardt for whole-trial IK (bundle-adjustment structure).

Per iteration:

1. per-frame residual Jacobians ``J_z (T, R, Cf)`` and ``J_theta (T, R, P)`` in closed form
   (:class:`kinfunc.ik.jacobian.JacobianPlan`, one batched pass; ``vmap(jacfwd)`` is the test
   reference). Pose-only fits skip ``J`` and build ``J^T J``, ``J^T r`` from the moments of the
   markers below each joint entry (:func:`frame_normal_equations`);
2. per-frame normal-equation blocks ``A_t = J_z^T J_z (T, Cf, Cf)``, ``B_t = J_z^T J_theta``,
   damped (Marquardt: ``A + mu diag(A)``) and factorised in one batched Cholesky;
3. the shared parameters by the Schur complement of the frame blocks
   ``S_k = sum_t (J_theta^T J_theta - B_t^T A_t^-1 B_t) + prior`` (one ``(K, P, P)`` solve),
   then back-substitution for every frame at once;
4. temporal smoothness couples frames t and t +- 1, 2: the pose block is then block-tridiagonal
   in pairs of frames and is solved exactly by block cyclic reduction (log2(T) batched steps).

Joint limits: steps are projected onto the box, and coordinates sitting on a bound whose
gradient points outwards are held (active set) for the step. Without shared parameters or
smoothness the frames are independent problems, each with its own damping and acceptance.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import Tensor
from torch.func import jacfwd, vmap

from ..fk import full_coordinates
from .jacobian import JacobianPlan, KinematicConstants, MarkerTargets, full_coordinate_derivatives
from .problem import (
    IKProblem,
    coupling_cost,
    expand_q,
    frame_residual,
    prior_residuals,
    smooth_valid,
    unpack_model,
)

__all__ = ["GNOptions", "frame_jacobians", "frame_jacobians_autodiff", "frame_normal_equations", "solve_gn"]


@dataclasses.dataclass(frozen=True)
class GNOptions:
    max_iter: int = 50
    ftol: float = 1e-6  # relative decrease of the objective (per frame when separable) that counts as converged
    xtol: float = 1e-10  # step size (rad / m) that counts as converged
    mu0: float = 1e-4  # initial Marquardt damping


def frame_jacobians_autodiff(problem: IKProblem, Z: Tensor, theta: Optional[Tensor]):
    """Reference: ``(r (T, R), J_z (T, R, Cf), J_theta (T, R, P) or None)`` by ``vmap(jacfwd)``."""
    if problem.n_theta == 0 or theta is None:

        def f(z, x, m, v):
            r = frame_residual(problem, z, None, x, m, v)
            return r, r

        Jz, r = vmap(jacfwd(f, has_aux=True))(Z, problem.X, problem.present, problem.task_value)
        return r, Jz, None

    def g(z, t, x, m, v):
        r = frame_residual(problem, z, t, x, m, v)
        return r, r

    (Jz, Jt), r = vmap(jacfwd(g, argnums=(0, 1), has_aux=True))(
        Z, theta[problem.theta_index], problem.X, problem.present, problem.task_value
    )
    return r, Jz, Jt


def _limit_terms(problem: IKProblem, Z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The joint-limit rows' share of the normal equations at ``Z (T, Cf)``: ``cost (T,)``, the
    diagonal of ``J^T J`` ``(T, Cf)`` and ``J^T r`` ``(T, Cf)``. Each row ``w (z - clamp(z))``
    depends on one coordinate, so ``J^T J`` is diagonal (``w^2`` where the coordinate is
    outside its range)."""
    p_ = problem
    zl = Z[:, p_.limit_index]
    over = zl - torch.clamp(zl, p_.z_lo[p_.limit_index], p_.z_hi[p_.limit_index])  # (T, L)
    w2 = p_.limit_sqrt_w**2
    diag = Z.new_zeros(Z.shape).index_copy_(1, p_.limit_index, w2 * (over != 0).to(Z.dtype))
    g = Z.new_zeros(Z.shape).index_copy_(1, p_.limit_index, w2 * over)
    return w2 * (over * over).sum(-1), diag, g


def _task_limit_rows(
    problem: IKProblem, model, q: Tensor, Z: Tensor, task_value: Optional[Tensor] = None, limits: bool = True
):
    """Coordinate-task and (with ``limits``) joint-limit residuals ``(T, K)`` and their Jacobian
    ``(T, K, Cf)`` (``None`` when there are none); ``task_value (T, Kc)``: the task targets of
    these frames (default the problem's, all frames)."""
    p_ = problem
    rows, J = [], []
    if p_.task_index.numel():
        qf = full_coordinates(model, q)
        dq = full_coordinate_derivatives(model, q)
        tv = p_.task_value if task_value is None else task_value
        rows.append(p_.task_sqrt_w * (qf[:, p_.task_index] - tv))
        J.append(p_.task_sqrt_w[:, None] * dq[:, p_.task_index][..., p_.free_index])
    if limits and p_.limit_index.numel():
        zl = Z[:, p_.limit_index]
        lo, hi = p_.z_lo[p_.limit_index], p_.z_hi[p_.limit_index]
        rows.append(p_.limit_sqrt_w * (zl - torch.clamp(zl, lo, hi)))
        outside = ((zl < lo) | (zl > hi)).to(Z.dtype)
        onehot = torch.nn.functional.one_hot(p_.limit_index, p_.n_free).to(Z.dtype)  # (L, Cf)
        J.append(p_.limit_sqrt_w * outside[..., None] * onehot)
    if not rows:
        return None
    return torch.cat(rows, -1), torch.cat(J, -2)


def frame_jacobians(
    problem: IKProblem, Z: Tensor, theta: Optional[Tensor], consts: Optional[KinematicConstants] = None
):
    """``(r (T, R), J_z (T, R, Cf), J_theta (T, R, P) or None)``.

    Analytic marker Jacobians (:class:`kinfunc.ik.jacobian.JacobianPlan`) for poses and marker
    offsets; forward mode for scale parameters (few). Equals :func:`frame_jacobians_autodiff`.
    ``consts``: the plan's constants for the model at ``theta`` if already computed (they do not
    change while only poses are fitted).
    """
    p_ = problem
    if p_.n_sets != 1 and p_.n_theta and theta is not None:
        # one parameter set per trial: each set's frames with its own model, rows put back in place
        out = None
        for k in range(p_.n_sets):
            idx = torch.nonzero(p_.theta_index == k).flatten()
            if idx.numel() == 0:
                continue
            sub = dataclasses.replace(_frame_subset(p_, idx), n_sets=1, theta_index=torch.zeros_like(idx))
            part = frame_jacobians(sub, Z.index_select(0, idx), theta[k : k + 1])
            if out is None:
                out = [x.new_zeros((Z.shape[0],) + x.shape[1:]) for x in part]
            out = [o.index_copy(0, idx, x) for o, x in zip(out, part)]
        return tuple(out)
    th = theta[0] if (p_.n_theta and theta is not None) else None
    model = unpack_model(p_, th)
    q = expand_q(p_, Z)
    T, M = p_.X.shape[:2]
    plan = _plan(p_)
    if consts is None:
        consts = plan.constants(model, p_.kinematics if model is p_.model else None)
    sw = p_.sqrt_w * p_.present  # (T, M)
    kin = plan.evaluate(model, consts, q, weights=sw, scales=bool(p_.fit_global or p_.n_scale))
    r_parts = [(sw[..., None] * (kin.p - p_.X)).reshape(T, -1)]
    J_parts = [kin.J.reshape(T, 3 * M, -1)]
    extra = _task_limit_rows(p_, model, q, Z)
    if extra is not None:
        r_parts.append(extra[0])
        J_parts.append(extra[1])
    r = torch.cat(r_parts, -1)
    Jz = torch.cat(J_parts, -2)
    if th is None:
        return r, Jz, None
    R = r.shape[-1]
    cols = []
    if p_.fit_global or p_.n_scale:
        # d p / d s_body (T, M, 3, B, 3) mapped to the scale parameters: s_body = g * body_scales
        Ds = kin.dp_ds * sw[..., None, None, None]
        Bn = model.topology.n_bodies
        sel = []
        if p_.fit_global:
            sel.append(model.body_scales.reshape(-1, 1))
        if p_.n_scale:
            onehot = torch.nn.functional.one_hot(p_.scale_map.clamp(min=0), p_.n_scale).to(Z.dtype)
            sel.append(onehot * (p_.scale_map >= 0).to(Z.dtype)[:, None] * model.global_scale)
        Js = Ds.reshape(T, 3 * M, Bn * 3) @ torch.cat(sel, 1)  # (T, 3 M, n_sc)
        cols.append(torch.cat((Js, Js.new_zeros(T, R - 3 * M, Js.shape[-1])), 1))
    if p_.n_offset:
        s_body = model.global_scale * model.body_scales
        Oj = kin.R_markers * (s_body[list(model.topology.marker_bodies)] * sw[..., None])[..., None, :]  # (T, M, 3, 3)
        E = p_.offset_select  # (M, 3, n_off)
        Jo = torch.einsum("tmxa,mak->tmxk", Oj, E).reshape(T, 3 * M, p_.n_offset)
        cols.append(torch.cat((Jo, Jo.new_zeros(T, R - 3 * M, p_.n_offset)), 1))
    return r, Jz, torch.cat(cols, -1)


def frame_normal_equations(
    problem: IKProblem,
    Z: Tensor,
    consts: Optional[KinematicConstants] = None,
    targets: Optional[MarkerTargets] = None,
    task_value: Optional[Tensor] = None,
):
    """Per-frame Gauss-Newton pieces for poses only (no shared parameters): ``cost (T,)``,
    ``A = J^T J (T, Cf, Cf)`` and ``g = J^T r (T, Cf)`` of :func:`frame_jacobians`' residuals
    and the marker positions ``(T, M, 3)``,
    built from marker moments (:meth:`JacobianPlan.normal_equations`) instead of the
    ``(T, 3 M, Cf)`` Jacobian. ``targets``: the problem's markers as
    :class:`~kinfunc.ik.jacobian.MarkerTargets` when already made; with them, ``task_value
    (T, Kc)`` the coordinate-task targets of the same frames (default: all the problem's)."""
    p_ = problem
    model, q, plan, consts, targets = _pose_pieces(p_, Z, consts, targets)
    cost, A, g, pos = plan.normal_equations(model, consts, q, targets)
    extra = _task_limit_rows(p_, model, q, Z, task_value, limits=False)
    if extra is not None:
        r, J = extra
        Jt = J.transpose(-1, -2)
        cost = cost + (r * r).sum(-1)
        A = A + Jt @ J
        g = g + (Jt @ r[..., None])[..., 0]
    if p_.limit_index.numel():
        lc, ld, lg = _limit_terms(p_, Z)
        cost, A, g = cost + lc, A + torch.diag_embed(ld), g + lg
    return cost, A, g, pos


def frame_costs(
    problem: IKProblem,
    Z: Tensor,
    consts: Optional[KinematicConstants] = None,
    targets: Optional[MarkerTargets] = None,
    task_value: Optional[Tensor] = None,
):
    """The ``cost (T,)`` and marker positions ``(T, M, 3)`` of :func:`frame_normal_equations`
    at ``Z (T, Cf)`` without any derivatives (one forward pass)."""
    model, q, plan, consts, targets = _pose_pieces(problem, Z, consts, targets)
    cost, pos = plan.marker_costs(model, consts, q, targets)
    extra = _task_limit_rows(problem, model, q, Z, task_value, limits=False)
    if extra is not None:
        cost = cost + (extra[0] * extra[0]).sum(-1)
    if problem.limit_index.numel():
        cost = cost + _limit_terms(problem, Z)[0]
    return cost, pos


def frame_information(problem: IKProblem, Z: Tensor) -> Tensor:
    """How much the present markers see each free coordinate in each frame: the diagonal of
    ``J^T J`` of the weighted marker residuals at ``Z (T, Cf)``, ``(T, Cf)`` (m^2 per rad^2 or
    per m^2; joint limits and coordinate tasks left out)."""
    model, q, plan, consts, targets = _pose_pieces(problem, Z, None, None)
    return plan.normal_equations(model, consts, q, targets)[1].diagonal(dim1=-2, dim2=-1)


def _plan(p_: IKProblem) -> JacobianPlan:
    """The problem's Jacobian plan (built for its free coordinates when it has none)."""
    return p_.plan if p_.plan is not None else JacobianPlan.build(p_.model, p_.free_index.tolist())


def _pose_pieces(p_: IKProblem, Z: Tensor, consts, targets):
    """What a pose-only evaluation at ``Z (T, Cf)`` needs: the model, ``q (T, C)``, the plan, its
    constants and the :class:`MarkerTargets` (``consts`` and ``targets`` made when ``None``)."""
    model = p_.model
    plan = _plan(p_)
    if consts is None:
        consts = plan.constants(model, p_.kinematics)
    if targets is None:
        targets = MarkerTargets.of(p_.X, p_.sqrt_w * p_.present)
    return model, expand_q(p_, Z), plan, consts, targets


def _smooth_op(problem: IKProblem, V: Tensor) -> Tensor:
    """``w_s D^T D V`` for ``V (T, Cf)`` (second differences within trials)."""
    if problem.smooth_sqrt_w <= 0 or V.shape[0] < 3:
        return torch.zeros_like(V)
    valid = smooth_valid(problem)[:, None]
    d2 = (V[2:] - 2.0 * V[1:-1] + V[:-2]) * valid * problem.smooth_sqrt_w**2
    if problem.smooth_rel is not None:
        d2 = d2 * problem.smooth_rel
    out = torch.zeros_like(V)
    out = out + torch.nn.functional.pad(d2, (0, 0, 0, 2)) - 2.0 * torch.nn.functional.pad(d2, (0, 0, 1, 1))
    out = out + torch.nn.functional.pad(d2, (0, 0, 2, 0))
    return out


def _smooth_band(problem: IKProblem, T: int, dtype, device) -> Tensor:
    """Band of ``w_s D^T D`` ``(T, 3)``: coefficients of frame ``t`` with ``t``, ``t+1``, ``t+2``."""
    if problem.smooth_sqrt_w <= 0 or T < 3:
        return torch.zeros(T, 3, dtype=dtype, device=device)
    v = smooth_valid(problem)  # (T-2,): difference r covers frames r, r+1, r+2
    F = torch.nn.functional.pad
    vp = F(v, (2, 2))  # vp[a + 2] = v[a]
    va, va1, va2 = vp[2 : T + 2], vp[1 : T + 1], vp[0:T]  # v[a], v[a-1], v[a-2]
    k0 = va + 4.0 * va1 + va2
    k1 = -2.0 * va - 2.0 * va1
    k2 = va
    return torch.stack((k0, k1, k2), -1) * problem.smooth_sqrt_w**2


def _spd_inverse(A: Tensor) -> Tensor:
    """Inverses of the positive definite blocks ``A (N, n, n)`` from their guarded Cholesky factors."""
    return torch.cholesky_inverse(_cholesky(A))


class BlockTridiagonal:
    """A symmetric block-tridiagonal system ``H x = b`` reduced once (cyclic reduction:
    ``log2 N`` batched levels, no loop over blocks), then solved for any right-hand side.

    ``D (N, n, n)`` diagonal blocks, ``U (N, n, n)`` upper blocks (``U[i]`` couples block ``i``
    with ``i + 1``; ``U[N-1]`` is ignored). Each level inverts its odd blocks once (batched
    Cholesky) and eliminates them; the inverses are kept, so a solve is matrix products only.
    Every block met must be invertible (true for positive definite ``H``).
    """

    def __init__(self, D: Tensor, U: Tensor):
        self.levels = []
        while D.shape[0] > 1:
            N, n = D.shape[0], D.shape[-1]
            U = torch.cat((U[:-1], torch.zeros_like(U[:1])), 0)
            if N % 2:  # an uncoupled identity block makes the count even
                D = torch.cat((D, torch.eye(n, dtype=D.dtype, device=D.device)[None]), 0)
                U = torch.cat((U, torch.zeros_like(U[:1])), 0)
            De, Do, Ue, Uo = D[0::2], D[1::2], U[0::2], U[1::2]  # Ue[k]: 2k with 2k+1; Uo[k]: 2k+1 with 2k+2
            X = _spd_inverse(Do)
            Wr, Wl = X @ Ue.transpose(-1, -2), X @ Uo
            self.levels.append((N, X, Ue, Uo, Wr, Wl))
            D = De - Ue @ Wr - self._shift(Uo.transpose(-1, -2) @ Wl)
            U = -(Ue @ Wl)
        self.last = _spd_inverse(D)

    @staticmethod
    def _shift(x: Tensor) -> Tensor:
        """``x[k-1]`` at position ``k``, zero at 0."""
        return torch.cat((torch.zeros_like(x[:1]), x[:-1]), 0)

    def solve(self, b: Tensor) -> Tensor:
        """``x (N, n, r)`` for ``b (N, n, r)``."""
        kept = []
        for N, X, Ue, Uo, _, _ in self.levels:
            if N % 2:
                b = torch.cat((b, torch.zeros_like(b[:1])), 0)
            rb = X @ b[1::2]
            kept.append(rb)
            b = b[0::2] - Ue @ rb - self._shift(Uo.transpose(-1, -2) @ rb)
        x = self.last @ b
        for (N, _, _, _, Wr, Wl), rb in zip(reversed(self.levels), reversed(kept)):
            xo = rb - Wr @ x - Wl @ torch.cat((x[1:], torch.zeros_like(x[:1])), 0)
            x = torch.stack((x, xo), 1).reshape(-1, *x.shape[1:])[:N]
        return x


class _Linear:
    """The (damped, active-set reduced) normal equations at one linearisation point.

    Frame blocks ``A_t (T, Cf, Cf)``; with smoothness the pose block is block-pentadiagonal in
    frames, i.e. block-tridiagonal in pairs of frames, and is solved exactly by cyclic reduction.
    Shared parameters enter through the Schur complement.
    """

    def __init__(self, problem, A, B, D, gz, gt, keep, mu, band):
        self.p = problem
        T, Cf = gz.shape
        self.T, self.Cf = T, Cf
        self.keep = keep  # (T, Cf) 1 = free for this step, 0 = held on a bound
        self.Ad = _damped(A, keep, mu)[0]
        self.smooth = problem.smooth_sqrt_w > 0 and T >= 3
        if self.smooth:
            self._build_pairs(band)
        else:
            self.L = _cholesky(self.Ad)
        self.gz = gz * keep
        self.has_theta = B is not None
        if self.has_theta:
            K, P = gt.shape
            self.B = B * keep[:, :, None]
            diagD = torch.diagonal(D, dim1=-2, dim2=-1)
            mt = mu.mean() if mu.ndim == 1 else mu
            self.Dd = D + torch.diag_embed(mt * (diagD + 1e-9))
            self.gt = gt
            self.Y = self._hzz_solve(self.B)  # (T, Cf, P)
            BtY = self.B.transpose(-1, -2) @ self.Y  # (T, P, P)
            S = self.Dd.index_add(0, problem.theta_index, -BtY)
            S = 0.5 * (S + S.transpose(-1, -2))
            self.S_L, info = torch.linalg.cholesky_ex(S)
            if bool((info != 0).any()):
                self.S_L = torch.linalg.cholesky(S + 1e-10 * torch.eye(P, dtype=S.dtype, device=S.device))

    def _build_pairs(self, band: Tensor) -> None:
        """Pair-of-frames blocks of ``Ad + keep-masked w_s D^T D``."""
        T, Cf = self.T, self.Cf
        Tp = T + (T % 2)
        keep = self.keep
        Ad = self.Ad
        if Tp != T:  # pad with an identity frame, uncoupled
            Ad = torch.cat((Ad, torch.eye(Cf, dtype=Ad.dtype, device=Ad.device)[None]), 0)
            keep = torch.cat((keep, torch.zeros_like(keep[:1])), 0)
            band = torch.cat((band, torch.zeros_like(band[:1])), 0)
        F = torch.nn.functional.pad
        k0, k1, k2 = band.unbind(-1)
        kn1 = F(keep[1:], (0, 0, 0, 1))
        kn2 = F(keep[2:], (0, 0, 0, 2))
        rel = 1.0 if self.p.smooth_rel is None else self.p.smooth_rel
        d1, d2 = k1[:, None] * keep * kn1 * rel, k2[:, None] * keep * kn2 * rel  # (Tp, Cf): t with t+1, t with t+2
        c1 = torch.diag_embed(d1)
        Dt = Ad + torch.diag_embed(k0[:, None] * keep * rel)  # t with t
        N = Tp // 2
        e, o = slice(0, Tp, 2), slice(1, Tp, 2)
        top = torch.cat((Dt[e], c1[e]), -1)
        bot = torch.cat((c1[e].transpose(-1, -2), Dt[o]), -1)
        PD = torch.cat((top, bot), -2)  # (N, 2Cf, 2Cf)
        # pair i (frames 2i, 2i+1) with pair i+1 (frames 2i+2, 2i+3)
        c2 = torch.diag_embed(d2)
        u_top = torch.cat((c2[e], torch.zeros_like(c2[e])), -1)  # 2i with 2i+2 (c2), 2i with 2i+3 (none)
        u_bot = torch.cat((c1[o], c2[o]), -1)  # 2i+1 with 2i+2 (c1), 2i+1 with 2i+3 (c2)
        self.pairs = BlockTridiagonal(PD, torch.cat((u_top, u_bot), -2))
        self.Tp, self.N = Tp, N

    def _hzz_solve(self, R: Tensor) -> Tensor:
        """``H_zz^-1 R`` for ``R (T, Cf, r)``."""
        if not self.smooth:
            return torch.cholesky_solve(R, self.L)
        T, Cf = self.T, self.Cf
        if self.Tp != T:
            R = torch.cat((R, torch.zeros_like(R[:1])), 0)
        Rp = R.reshape(self.N, 2 * Cf, R.shape[-1])
        X = self.pairs.solve(Rp).reshape(self.Tp, Cf, R.shape[-1])
        return X[:T]

    def solve(self, opts: GNOptions):
        """Newton step ``(dz, dtheta)`` for the gradient ``(gz, gt)``."""
        y = self._hzz_solve(-self.gz[..., None])[..., 0]
        if not self.has_theta:
            return y * self.keep, None
        p = self.p
        s = -self.gt - torch.zeros_like(self.gt).index_add(
            0, p.theta_index, (self.B.transpose(-1, -2) @ y[..., None])[..., 0]
        )
        xt = torch.cholesky_solve(s[..., None], self.S_L)[..., 0]
        xz = y - (self.Y @ xt[p.theta_index][..., None])[..., 0]
        return xz * self.keep, xt


def _total(problem: IKProblem, r: Tensor, Z: Tensor, theta: Optional[Tensor]) -> Tensor:
    """The total objective (scalar) from frame residuals ``r (T, R)`` plus the coupling terms."""
    return (r * r).sum() + coupling_cost(problem, Z, theta)


@dataclasses.dataclass
class GNResult:
    Z: Tensor
    theta: Optional[Tensor]
    objective: float
    iterations: int
    converged: bool
    history: list
    positions: Optional[Tensor] = None  # (T, M, 3) marker positions at Z, when the solver has them
    costs: Optional[Tensor] = None  # (T,) each frame's cost at Z, when frames are independent


def _frame_subset(problem: IKProblem, idx: Tensor) -> IKProblem:
    """The problem restricted to frames ``idx (n,)`` (only for independent frames)."""
    return dataclasses.replace(
        problem,
        X=problem.X.index_select(0, idx),
        present=problem.present.index_select(0, idx),
        theta_index=problem.theta_index.index_select(0, idx),
        trial_id=problem.trial_id.index_select(0, idx),
        task_value=problem.task_value.index_select(0, idx),
    )


def _damped(A: Tensor, keep: Optional[Tensor], mu: Tensor) -> tuple[Tensor, Tensor]:
    """Marquardt-damped frame blocks ``A + mu diag(A)`` ``(n, Cf, Cf)`` and the added diagonal
    ``(n, Cf)``; ``mu`` per frame ``(n,)`` or one value. Coordinates where ``keep (n, Cf)`` is 0
    (held on a bound) get an identity row and column, so a step leaves them where they are
    (``None``: all free)."""
    mu = mu[:, None] if mu.ndim == 1 else mu
    damp = mu * (torch.diagonal(A, dim1=-2, dim2=-1) + 1e-9)
    if keep is not None:
        A = A * (keep[:, :, None] * keep[:, None, :])
        damp = damp * keep + (1.0 - keep)
    return A + torch.diag_embed(damp), damp


def _cholesky(Ad: Tensor) -> Tensor:
    """Batched Cholesky factor of ``Ad (n, Cf, Cf)``; where it is not positive definite at this
    precision, with a little more on the diagonal."""
    L, info = torch.linalg.cholesky_ex(Ad)
    if bool(info.any()):
        jitter = 1e-8 * (Ad.diagonal(dim1=-2, dim2=-1).abs().amax(-1, keepdim=True) + 1.0)
        L = torch.linalg.cholesky(Ad + torch.diag_embed(jitter.expand(-1, Ad.shape[-1])))
    return L


def _damped_step(A: Tensor, g: Tensor, held: Optional[Tensor], mu: Tensor) -> tuple[Tensor, Tensor]:
    """Per-frame Marquardt step ``d = -(A + mu diag(A))^-1 g`` ``(n, Cf)`` for ``A (n, Cf, Cf)``,
    ``g (n, Cf)``, damping ``mu (n,)``; coordinates where ``held (n, Cf)`` do not move. Also
    returns the added diagonal ``(n, Cf)``."""
    keep = (~held).to(A.dtype) if held is not None and bool(held.any()) else None
    Ad, damp = _damped(A, keep, mu)
    return torch.cholesky_solve(-(g if keep is None else g * keep)[..., None], _cholesky(Ad))[..., 0], damp


def _solve_frames(p: IKProblem, Z0: Tensor, opts: GNOptions, consts) -> GNResult:
    """Independent frames (no shared parameters, no smoothness): every frame is its own
    Levenberg-Marquardt problem with its own damping and acceptance, all solved in one batch.

    A frame is settled when its accepted step decreased its cost by less than ``ftol``
    (relative), or when its next step is predicted to gain less than a few ``ftol``: such a
    last step is taken without new derivatives and checked at the end, for all frames at once,
    by one forward pass (kept only where it lowers the cost). Settled frames leave the batch, so
    later iterations cost only what is left.
    """
    lo, hi = p.z_lo, p.z_hi
    bounded = bool(torch.isfinite(lo).any() | torch.isfinite(hi).any())
    Z = torch.clamp(Z0, lo, hi)
    T = Z.shape[0]
    targets_all = targets = MarkerTargets.of(p.X, p.sqrt_w * p.present)
    tasks = p.task_value if p.task_index.numel() else None  # (T, Kc) targets of the active frames
    # the active frames: their indices (None = all), poses, costs, damping and normal equations
    active, Za = None, Z
    ca, A, g, _ = frame_normal_equations(p, Za, consts, targets, tasks)
    mua = torch.full((T,), opts.mu0, dtype=Z.dtype, device=Z.device)
    history = [float(ca.sum())]
    left_cost = 0.0  # summed cost of the frames that left
    out = []  # frames that left: (indices, poses, costs, unchecked last step or None)
    tiny = torch.finfo(Z.dtype).tiny

    def leave(mask: Tensor, step: Optional[Tensor] = None) -> Tensor:
        """Frames where ``mask`` (over the active ones) leave, with their last ``step`` poses if
        given; returns the positions that stay."""
        nonlocal active, targets, tasks, left_cost
        go, stay = torch.nonzero(mask).flatten(), torch.nonzero(~mask).flatten()
        gone = ca.index_select(0, go)
        left_cost += float(gone.sum())
        out.append((go if active is None else active.index_select(0, go), Za.index_select(0, go), gone,
                    None if step is None else step.index_select(0, go)))
        active = stay if active is None else active.index_select(0, stay)
        targets = targets.frames(stay)
        tasks = None if tasks is None else tasks.index_select(0, stay)
        return stay

    converged = False
    it = 0
    for it in range(1, opts.max_iter + 1):
        # active set: on a bound with the descent direction pointing out
        if bounded:
            held = ((Za <= lo) & (g > 0)) | ((Za >= hi) & (g < 0))
            dz, _ = _damped_step(A, g, held, mua)
            push = (((Za <= lo) & (dz < 0)) | ((Za >= hi) & (dz > 0))) & ~held
            if bool(push.any()):  # held coordinates the step would push further out: re-solve without them
                dz, _ = _damped_step(A, g, held | push, mua)
            Zn = torch.clamp(Za + dz, lo, hi)
            dd = Zn - Za
            # decrease predicted by the undamped linear model: -(2 g.d + d^T A d)
            pred = -(dd * (2.0 * g + (A @ dd[..., None])[..., 0])).sum(-1)
        else:
            dd, damp = _damped_step(A, g, None, mua)
            Zn = Za + dd
            # the same, with (A + diag(damp)) d = -g
            pred = (dd * (damp * dd - g)).sum(-1)
        scale = ca.clamp_min(tiny)  # each frame against its own cost
        last = (pred <= 3.0 * opts.ftol * scale) | (ca < 1e-30)  # this step gains too little to go on after it
        if bool(last.any()):
            all_last = bool(last.all())
            stay = leave(last, Zn)
            if all_last:
                converged = True
                break
            Za, Zn, dd, ca, mua, scale, pred, A, g = (
                x.index_select(0, stay) for x in (Za, Zn, dd, ca, mua, scale, pred, A, g)
            )
        cn, An, gn, _ = frame_normal_equations(p, Zn, consts, targets, tasks)
        acc = cn < ca
        rel = (ca - cn) / scale
        # a rejected step that promised less than ftol: converged at this precision (float32 noise)
        settled = torch.where(
            acc, (rel < opts.ftol) | (dd.abs().amax(-1) < opts.xtol), (mua > 1e8) | (pred <= opts.ftol * scale)
        )
        Za = torch.where(acc[:, None], Zn, Za)
        ca = torch.where(acc, cn, ca)
        mua = torch.where(acc, (mua / 3.0).clamp_min(1e-12), mua * 4.0)
        history.append(left_cost + float(ca.sum()))
        if bool(settled.all()):
            converged = True
            leave(settled)
            break
        A = torch.where(acc[:, None, None], An, A)
        g = torch.where(acc[:, None], gn, g)
        if bool(settled.any()):  # converged frames leave the batch
            stay = leave(settled)
            Za, ca, mua, A, g = (x.index_select(0, stay) for x in (Za, ca, mua, A, g))
    if active is None or active.numel():  # out of iterations: the frames still active
        leave(torch.ones_like(ca, dtype=torch.bool))
    idx = torch.cat([o[0] for o in out])
    Z = torch.empty_like(Z).index_copy_(0, idx, torch.cat([o[1] for o in out]))
    cost = torch.empty_like(Z[:, 0]).index_copy_(0, idx, torch.cat([o[2] for o in out]))
    # the unchecked last steps, and every frame's marker positions, from one forward pass
    stepped = [o for o in out if o[3] is not None]
    Zc = Z
    if stepped:
        Zc = Z.index_copy(0, torch.cat([o[0] for o in stepped]), torch.cat([o[3] for o in stepped]))
    cc, P = frame_costs(p, Zc, consts, targets_all)
    if stepped:
        worse = cc >= cost
        reject = worse & (Zc != Z).any(-1)
        Z = torch.where(worse[:, None], Z, Zc)
        cost = torch.where(worse, cost, cc)
        if bool(reject.any()):  # positions where a last step was not kept
            back = torch.nonzero(reject).flatten()
            tb = p.task_value.index_select(0, back) if p.task_index.numel() else None
            P = P.index_copy(0, back, frame_costs(p, Z.index_select(0, back), consts, targets_all.frames(back), tb)[1])
        history.append(float(cost.sum()))
    return GNResult(Z, None, float(cost.sum()), it, converged, history, P, cost)


_CHUNK = 1024  # frames per batch of the independent-frame solver: long trials run ~1.8x faster in pieces (cache)


def _solve_frames_chunked(p: IKProblem, Z0: Tensor, opts: GNOptions, consts) -> GNResult:
    """:func:`_solve_frames` over blocks of at most ``_CHUNK`` frames (the frames are independent,
    so the result is the same; the working set of each block stays in cache)."""
    T = Z0.shape[0]
    if T <= _CHUNK:
        return _solve_frames(p, Z0, opts, consts)
    n = -(-T // _CHUNK)
    parts = []
    for idx in torch.arange(T, device=Z0.device).tensor_split(n):
        parts.append(_solve_frames(_frame_subset(p, idx), Z0.index_select(0, idx), opts, consts))
    L = max(len(r.history) for r in parts)
    history = [sum(r.history[min(i, len(r.history) - 1)] for r in parts) for i in range(L)]
    return GNResult(
        torch.cat([r.Z for r in parts]),
        None,
        sum(r.objective for r in parts),
        max(r.iterations for r in parts),
        all(r.converged for r in parts),
        history,
        torch.cat([r.positions for r in parts]),
        torch.cat([r.costs for r in parts]),
    )


def solve_gn(problem: IKProblem, Z0: Tensor, theta0: Optional[Tensor], opts: GNOptions = GNOptions()) -> GNResult:
    """Minimise :func:`kinfunc.ik.problem.objective` from ``Z0 (T, Cf)``, ``theta0 (K, P)``.

    Jacobians are analytic, so no autograd is needed: the solve runs in inference mode (no
    autograd bookkeeping per op), or under ``no_grad`` for models with couplers reading other
    couplers' outputs (their derivatives use forward mode, which inference mode disables). The
    returned tensors are ordinary ones."""
    topo = problem.model.topology
    nested = any(i >= topo.n_coordinates for g in topo.coupler_groups for i in g.inputs)
    with torch.no_grad() if nested else torch.inference_mode():
        res = _solve_gn(problem, Z0, theta0, opts)
    copy = lambda x: None if x is None else x.clone()  # noqa: E731
    return dataclasses.replace(
        res, Z=copy(res.Z), theta=copy(res.theta), positions=copy(res.positions), costs=copy(res.costs)
    )


def _solve_gn(problem: IKProblem, Z0: Tensor, theta0: Optional[Tensor], opts: GNOptions) -> GNResult:
    p = problem
    lo, hi = p.z_lo, p.z_hi
    Z = torch.clamp(Z0, lo, hi)
    # tolerances below the working precision cannot be met (float32)
    opts = dataclasses.replace(opts, ftol=max(opts.ftol, 100 * torch.finfo(Z.dtype).eps))
    theta = theta0 if p.n_theta else None
    T, Cf = Z.shape
    # the kinematic constants depend on the shared parameters only: computed once for a pose fit
    consts = None if (p.n_theta or p.plan is None) else p.plan.constants(p.model, p.kinematics)
    if not p.coupled:
        return _solve_frames_chunked(p, Z0, opts, consts)
    mu = torch.tensor(opts.mu0, dtype=Z.dtype, device=Z.device)

    def evaluate(Zc: Tensor, thc: Optional[Tensor]):
        """The objective at ``(Zc, thc)`` and what its linearisation is made from: for poses
        alone (smoothness couples the frames) the frame blocks straight from the marker moments,
        else the residuals and Jacobians."""
        if thc is None:
            cost, A_, g_, _ = frame_normal_equations(p, Zc, consts)
            return cost.sum() + coupling_cost(p, Zc, None), (A_, g_)
        r_, Jz_, Jt_ = frame_jacobians(p, Zc, thc, consts)
        return _total(p, r_, Zc, thc), (r_, Jz_, Jt_)

    total, state = evaluate(Z, theta)
    history = [float(total)]
    band = _smooth_band(p, T, Z.dtype, Z.device)
    lin = None
    converged = False
    it = 0
    for it in range(1, opts.max_iter + 1):
        if lin is None:
            B = D = gt = Jt = None
            if theta is None:
                A, gz = state
            else:
                r, Jz, Jt = state
                Jzt = Jz.transpose(-1, -2)
                A = Jzt @ Jz
                gz = (Jzt @ r[..., None])[..., 0]
            if p.smooth_sqrt_w > 0:  # gradient of the smoothness term: w D^T D Z
                gz = gz + _smooth_op(p, Z)
            if Jt is not None:
                B = Jzt @ Jt
                Dt = Jt.transpose(-1, -2) @ Jt
                gtt = (Jt.transpose(-1, -2) @ r[..., None])[..., 0]
                K, P = theta.shape
                D = torch.zeros(K, P, P, dtype=Z.dtype, device=Z.device).index_add(0, p.theta_index, Dt)
                D = D + torch.diag_embed(p.prior_sqrt_w**2).expand(K, P, P)
                gt = torch.zeros(K, P, dtype=Z.dtype, device=Z.device).index_add(0, p.theta_index, gtt)
                gt = gt + p.prior_sqrt_w * prior_residuals(p, theta)
            # active set: on a bound with the descent direction pointing out
            held = ((Z <= lo) & (gz > 0)) | ((Z >= hi) & (gz < 0))
            keep = (~held).to(Z.dtype)
            lin_parts = (A, B, D, gz, gt, keep)
        A, B, D, gz, gt, keep = lin_parts
        lin = _Linear(p, A, B, D, gz, gt, keep, mu, band)
        dz, dt = lin.solve(opts)
        # coordinates on a bound that the step would push further out: hold them and re-solve
        push = (((Z <= lo) & (dz < 0)) | ((Z >= hi) & (dz > 0))) & (keep > 0)
        if bool(push.any()):
            keep = keep * (~push).to(Z.dtype)
            lin_parts = (A, B, D, gz, gt, keep)
            lin = _Linear(p, A, B, D, gz, gt, keep, mu, band)
            dz, dt = lin.solve(opts)
        Zn = torch.clamp(Z + dz, lo, hi)
        thn = None if theta is None else theta + dt
        # the candidate's objective and linearisation pieces (reused if it is accepted)
        total_n, state_n = evaluate(Zn, thn)
        # decrease predicted by the undamped linear model: -(2 g.d + d^T H d)
        dd = Zn - Z
        pred = -(2.0 * (gz * dd).sum(-1) + (dd[:, None, :] @ A @ dd[..., None])[..., 0, 0])
        pred_total = pred.sum() - (dd * _smooth_op(p, dd)).sum()  # gz already holds the smoothness gradient
        if dt is not None:
            Bd = (B @ dt[p.theta_index][..., None])[..., 0]
            pred_total = pred_total - 2.0 * (dd * Bd).sum() - 2.0 * (gt * dt).sum() - (dt[:, None, :] @ D @ dt[..., None]).sum()
        accepted = bool(total_n < total)
        if accepted:
            rel = float((total - total_n) / total.clamp_min(torch.finfo(total.dtype).tiny))
            step = float((Zn - Z).abs().max()) if Z.numel() else 0.0
            if dt is not None:
                step = max(step, float(dt.abs().max()))
            Z, theta, total, state = Zn, thn, total_n, state_n
            mu = (mu / 3.0).clamp_min(1e-12)
            lin = None
            history.append(float(total))
            if rel < opts.ftol or step < opts.xtol:
                converged = True
                break
        else:
            mu = mu * 4.0
            history.append(float(total))
            # no further decrease possible at this precision: the model itself promised (almost)
            # none. A negative promise is a step the linear solve got wrong (a nearly singular
            # pose block: coordinates the data do not see), which more damping cures.
            if float(mu) > 1e8 or 0.0 <= float(pred_total) <= opts.ftol * float(total):
                converged = True
                break
    return GNResult(Z, theta, float(total), it, converged, history)
