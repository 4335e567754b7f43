"""Batched Gauss-Newton / Levenberg-Marquardt for whole-trial IK (bundle-adjustment structure).

Per iteration:

1. per-frame residual Jacobians ``J_z (T, R, Cf)`` and ``J_theta (T, R, P)`` by forward mode
   (``vmap(jacfwd)``, one batched pass; reverse mode is the slow direction here);
2. per-frame normal-equation blocks ``A_t = J_z^T J_z (T, Cf, Cf)``, ``B_t = J_z^T J_theta``,
   damped (Marquardt: ``A + mu diag(A)``) and factorised in one batched Cholesky;
3. the shared parameters by the Schur complement of the frame blocks
   ``S_k = sum_t (J_theta^T J_theta - B_t^T A_t^-1 B_t) + prior`` (one ``(K, P, P)`` solve),
   then back-substitution for every frame at once;
4. with temporal smoothness (which couples neighbouring frames) the same block solve is the
   preconditioner of a conjugate-gradient solve of the full system.

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

from .problem import IKProblem, frame_residual, frame_residuals, prior_residuals, smooth_residuals, smooth_valid

__all__ = ["GNOptions", "frame_jacobians", "solve_gn"]


@dataclasses.dataclass(frozen=True)
class GNOptions:
    max_iter: int = 50
    ftol: float = 1e-8  # relative decrease of the objective that counts as converged
    xtol: float = 1e-10  # step size (rad / m) that counts as converged
    mu0: float = 1e-4  # initial Marquardt damping
    cg_max_iter: int = 200
    cg_tol: float = 1e-12


def frame_jacobians(problem: IKProblem, Z: Tensor, theta: Optional[Tensor]):
    """``(r (T, R), J_z (T, R, Cf), J_theta (T, R, P) or None)`` by ``vmap(jacfwd)``."""
    if problem.n_theta == 0 or theta is None:

        def f(z, x, m):
            r = frame_residual(problem, z, None, x, m)
            return r, r

        Jz, r = vmap(jacfwd(f, has_aux=True))(Z, problem.X, problem.present)
        return r, Jz, None

    def g(z, t, x, m):
        r = frame_residual(problem, z, t, x, m)
        return r, r

    (Jz, Jt), r = vmap(jacfwd(g, argnums=(0, 1), has_aux=True))(Z, theta[problem.theta_index], problem.X, problem.present)
    return r, Jz, Jt


def _smooth_op(problem: IKProblem, V: Tensor) -> Tensor:
    """``w_s D^T D V`` for ``V (T, Cf)`` (second differences within trials)."""
    if problem.smooth_sqrt_w <= 0 or V.shape[0] < 3:
        return torch.zeros_like(V)
    valid = smooth_valid(problem)[:, None]
    d2 = (V[2:] - 2.0 * V[1:-1] + V[:-2]) * valid * problem.smooth_sqrt_w**2
    out = torch.zeros_like(V)
    out = out + torch.nn.functional.pad(d2, (0, 0, 0, 2)) - 2.0 * torch.nn.functional.pad(d2, (0, 0, 1, 1))
    out = out + torch.nn.functional.pad(d2, (0, 0, 2, 0))
    return out


def _smooth_diag(problem: IKProblem, T: int, dtype, device) -> Tensor:
    """Diagonal of ``w_s D^T D`` per frame ``(T,)`` (same for every coordinate)."""
    if problem.smooth_sqrt_w <= 0 or T < 3:
        return torch.zeros(T, dtype=dtype, device=device)
    v = smooth_valid(problem)
    F = torch.nn.functional.pad
    return (F(v, (0, 2)) + 4.0 * F(v, (1, 1)) + F(v, (2, 0))) * problem.smooth_sqrt_w**2


class _Linear:
    """The (damped, active-set reduced) normal equations at one linearisation point."""

    def __init__(self, problem, A, B, D, gz, gt, keep, mu, smooth_diag):
        self.p = problem
        T, Cf = gz.shape
        self.keep = keep  # (T, Cf) 1 = free for this step, 0 = held on a bound
        kk = keep[:, :, None] * keep[:, None, :]
        eye = torch.eye(Cf, dtype=A.dtype, device=A.device)
        diagA = torch.diagonal(A, dim1=-2, dim2=-1)
        dampz = mu[:, None] * (diagA + 1e-9) if mu.ndim == 1 else mu * (diagA + 1e-9)
        # full matrix (used for matvecs in CG) and the preconditioner/direct blocks
        self.A = A * kk + torch.diag_embed(1.0 - keep)
        self.Ad = self.A + torch.diag_embed((dampz + smooth_diag[:, None]) * keep)
        self.Adamp_only = torch.diag_embed(dampz * keep)
        self.L, info = torch.linalg.cholesky_ex(self.Ad)
        if bool((info != 0).any()):
            self.L = torch.linalg.cholesky(self.Ad + 1e-8 * eye * (diagA.abs().amax(-1) + 1)[:, None, None])
        self.gz = gz * keep
        self.has_theta = B is not None
        if self.has_theta:
            K, P = gt.shape
            self.B = B * keep[:, :, None]
            self.D = D
            diagD = torch.diagonal(D, dim1=-2, dim2=-1)
            mt = mu.mean() if mu.ndim == 1 else mu
            self.Dd = D + torch.diag_embed(mt * (diagD + 1e-9))
            self.Ddamp = torch.diag_embed(mt * (diagD + 1e-9))
            self.gt = gt
            self.Y = torch.cholesky_solve(self.B, self.L)  # (T, Cf, P)
            BtY = self.B.transpose(-1, -2) @ self.Y  # (T, P, P)
            S = self.Dd.index_add(0, problem.theta_index, -BtY)
            self.S_L, info = torch.linalg.cholesky_ex(S)
            if bool((info != 0).any()):
                self.S_L = torch.linalg.cholesky(S + 1e-10 * torch.eye(P, dtype=S.dtype, device=S.device))

    def block_solve(self, rz: Tensor, rt: Optional[Tensor]):
        """Solve the block system ``[[Ad, B], [B^T, Dd]] [x; y] = [rz; rt]`` (no smoothness coupling)."""
        rz = rz * self.keep
        y = torch.cholesky_solve(rz[..., None], self.L)[..., 0]
        if not self.has_theta:
            return y, None
        p = self.p
        s = rt - torch.zeros_like(rt).index_add(0, p.theta_index, (self.B.transpose(-1, -2) @ y[..., None])[..., 0])
        xt = torch.cholesky_solve(s[..., None], self.S_L)[..., 0]
        xz = y - (self.Y @ xt[p.theta_index][..., None])[..., 0]
        return xz * self.keep, xt

    def matvec(self, vz: Tensor, vt: Optional[Tensor]):
        """The damped full system (with smoothness) applied to ``(vz, vt)``."""
        p = self.p
        oz = ((self.A + self.Adamp_only) @ vz[..., None])[..., 0]
        oz = oz + _smooth_op(p, vz) * self.keep
        if not self.has_theta:
            return oz * self.keep, None
        oz = oz + (self.B @ vt[p.theta_index][..., None])[..., 0]
        ot = (self.Dd @ vt[..., None])[..., 0]
        ot = ot.index_add(0, p.theta_index, (self.B.transpose(-1, -2) @ vz[..., None])[..., 0])
        return oz * self.keep, ot

    def solve(self, opts: GNOptions):
        """Newton step ``(dz, dtheta)`` for gradient ``(gz, gt)``."""
        bz = -self.gz
        bt = -self.gt if self.has_theta else None
        if self.p.smooth_sqrt_w <= 0:
            return self.block_solve(bz, bt)
        return self._pcg(bz, bt, opts)

    def _pcg(self, bz, bt, opts):
        def dot(az, at, cz, ct):
            d = (az * cz).sum()
            if at is not None:
                d = d + (at * ct).sum()
            return d

        xz = torch.zeros_like(bz)
        xt = None if bt is None else torch.zeros_like(bt)
        rz, rt = bz.clone(), (None if bt is None else bt.clone())
        zz, zt = self.block_solve(rz, rt)
        pz, pt = zz, zt
        rho = dot(rz, rt, zz, zt)
        b2 = dot(bz, bt, bz, bt)
        for it in range(opts.cg_max_iter):
            Apz, Apt = self.matvec(pz, pt)
            alpha = rho / dot(pz, pt, Apz, Apt).clamp_min(1e-300)
            xz = xz + alpha * pz
            rz = rz - alpha * Apz
            if xt is not None:
                xt = xt + alpha * pt
                rt = rt - alpha * Apt
            if it % 5 == 4 and float(dot(rz, rt, rz, rt)) <= opts.cg_tol * float(b2) + 1e-300:
                break
            zz, zt = self.block_solve(rz, rt)
            rho_new = dot(rz, rt, zz, zt)
            beta = rho_new / rho.clamp_min(1e-300)
            rho = rho_new
            pz = zz + beta * pz
            if pt is not None:
                pt = zt + beta * pt
        return xz, xt


def _costs(problem: IKProblem, Z: Tensor, theta: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-frame costs ``(T,)`` (frame residuals only) and the total objective (scalar)."""
    r = frame_residuals(problem, Z, theta)
    c = (r * r).sum(-1)
    total = c.sum()
    if problem.smooth_sqrt_w > 0:
        s = smooth_residuals(problem, Z)
        total = total + (s * s).sum()
    if problem.n_theta:
        pr = prior_residuals(problem, theta)
        total = total + (pr * pr).sum()
    return c, total


@dataclasses.dataclass
class GNResult:
    Z: Tensor
    theta: Optional[Tensor]
    objective: float
    iterations: int
    converged: bool
    history: list


def solve_gn(problem: IKProblem, Z0: Tensor, theta0: Optional[Tensor], opts: GNOptions = GNOptions()) -> GNResult:
    """Minimise :func:`kinfunc.ik.problem.objective` from ``Z0 (T, Cf)``, ``theta0 (K, P)``."""
    p = problem
    lo, hi = p.z_lo, p.z_hi
    Z = torch.clamp(Z0, lo, hi)
    theta = theta0 if p.n_theta else None
    T, Cf = Z.shape
    separable = not p.coupled
    mu = torch.full((T,), opts.mu0, dtype=Z.dtype, device=Z.device) if separable else torch.tensor(opts.mu0, dtype=Z.dtype)
    cost_t, total = _costs(p, Z, theta)
    history = [float(total)]
    sdiag = _smooth_diag(p, T, Z.dtype, Z.device)
    lin = None
    converged = False
    it = 0
    for it in range(1, opts.max_iter + 1):
        if lin is None:
            r, Jz, Jt = frame_jacobians(p, Z, theta)
            Jzt = Jz.transpose(-1, -2)
            A = Jzt @ Jz
            gz = (Jzt @ r[..., None])[..., 0]
            if p.smooth_sqrt_w > 0:  # gradient of the smoothness term: w D^T D Z
                gz = gz + _smooth_op(p, Z)
            B = D = gt = None
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
        lin = _Linear(p, A, B, D, gz, gt, keep, mu, sdiag)
        dz, dt = lin.solve(opts)
        Zn = torch.clamp(Z + dz, lo, hi)
        thn = None if theta is None else theta + dt
        cost_n, total_n = _costs(p, Zn, thn)
        # decrease predicted by the undamped linear model: -(2 g.d + d^T A d), per frame
        dd = Zn - Z
        pred = -(2.0 * (gz * dd).sum(-1) + (dd[:, None, :] @ A @ dd[..., None])[..., 0, 0])
        if separable:
            acc = cost_n < cost_t
            rel = torch.where(acc, (cost_t - cost_n) / cost_t.clamp_min(1e-300), torch.zeros_like(cost_t))
            step = dd.abs().amax(-1)
            tiny = pred <= opts.ftol * cost_t
            settled = (acc & ((rel < opts.ftol) | (step < opts.xtol))) | (~acc & ((mu > 1e8) | tiny)) | (cost_t < 1e-30)
            Z = torch.where(acc[:, None], Zn, Z)
            cost_t = torch.where(acc, cost_n, cost_t)
            mu = torch.where(acc, (mu / 3.0).clamp_min(1e-12), mu * 4.0)
            total = cost_t.sum()
            history.append(float(total))
            lin = None  # some frames moved: relinearise (cheap: one batched jacfwd)
            if bool(settled.all()):
                converged = True
                break
        else:
            accepted = bool(total_n < total)
            if accepted:
                rel = float((total - total_n) / total.clamp_min(1e-300))
                step = float((Zn - Z).abs().max()) if Z.numel() else 0.0
                if dt is not None:
                    step = max(step, float(dt.abs().max()))
                Z, theta, total, cost_t = Zn, thn, total_n, cost_n
                mu = (mu / 3.0).clamp_min(1e-12)
                lin = None
                history.append(float(total))
                if rel < opts.ftol or step < opts.xtol:
                    converged = True
                    break
            else:
                mu = mu * 4.0
                history.append(float(total))
                predt = float(pred.sum())
                if dt is not None:
                    predt -= float(2.0 * (gt * dt).sum() + (dt[:, None, :] @ D @ dt[..., None]).sum())
                if float(mu) > 1e8 or predt <= opts.ftol * float(total):
                    converged = True  # no further decrease possible at this precision
                    break
    return GNResult(Z, theta, float(total), it, converged, history)
