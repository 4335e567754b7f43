"""L-BFGS over all free variables at once (the seed paper's method).

``torch.optim.LBFGS`` with a strong-Wolfe line search on the objective of
:mod:`kinfunc.ik.problem` divided by its starting value (so tolerances are relative).
Joint limits enter as the objective's exterior penalty; the result is then projected onto
the limits.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import Tensor

from .gn import GNResult
from .problem import IKProblem, objective

__all__ = ["LBFGSOptions", "solve_lbfgs"]


@dataclasses.dataclass(frozen=True)
class LBFGSOptions:
    max_iter: int = 1000
    history_size: int = 50
    tolerance_grad: float = 1e-9  # on the gradient (inf-norm) of objective / starting objective
    tolerance_change: float = 1e-11  # change of objective / starting objective


def solve_lbfgs(
    problem: IKProblem, Z0: Tensor, theta0: Optional[Tensor], opts: LBFGSOptions = LBFGSOptions()
) -> GNResult:
    """Minimise the objective from ``Z0 (T, Cf)``, ``theta0 (K, P)``; returns a :class:`GNResult`."""
    p = problem
    with torch.no_grad():
        f0 = float(objective(p, torch.clamp(Z0, p.z_lo, p.z_hi), theta0 if p.n_theta else None))
    T = max(f0, 1e-300)  # normalise: tolerances are relative to the starting objective
    Z = torch.clamp(Z0, p.z_lo, p.z_hi).detach().clone().requires_grad_(True)
    params = [Z]
    theta = None
    if p.n_theta:
        theta = theta0.detach().clone().requires_grad_(True)
        params.append(theta)
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=opts.max_iter,
        max_eval=int(opts.max_iter * 1.25) + 10,
        history_size=opts.history_size,
        tolerance_grad=opts.tolerance_grad,
        tolerance_change=opts.tolerance_change,
        line_search_fn="strong_wolfe",
    )
    history: list[float] = []

    def closure():
        opt.zero_grad()
        f = objective(p, Z, theta) / T
        f.backward()
        history.append(float(f.detach()) * T)
        return f

    opt.step(closure)
    n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
    with torch.no_grad():
        Zf = torch.clamp(Z.detach(), p.z_lo, p.z_hi)
        thf = None if theta is None else theta.detach()
        total = float(objective(p, Zf, thf))
    return GNResult(Zf, thf, total, n_iter, n_iter < opts.max_iter, history)
