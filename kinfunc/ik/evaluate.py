"""The OpenSim IK objective of a given solution, independent of any solver."""

from __future__ import annotations

import torch
from torch import Tensor

from ..fk import marker_positions
from ..model import Model
from ..trial import MarkerTrial
from .setup import IKSetup, coordinate_targets

__all__ = ["setup_objective"]


def setup_objective(model: Model, setup: IKSetup, trial: MarkerTrial, time: Tensor, q: Tensor) -> float:
    """OpenSim's IK objective summed over frames, for coordinates ``q (T, C)`` at trial times ``time (T,)`` (s).

    ``sum_t [ sum_m w_m |p_m(q_t) - x_mt|^2 + sum_c w_c (q_tc - value_c)^2 ]`` (m², rad²), over
    markers with a weight in ``setup.marker_weights`` (all shared markers, weight 1, when
    ``None``) that the model and the trial both have and that are present in frame ``t``;
    coordinate tasks with ``value=None`` hold the model default. ``time`` must be trial times
    (within 0.1 ms). ``from_file`` tasks take their targets from ``setup.coordinate_file`` at
    ``time`` (:func:`kinfunc.ik.setup.coordinate_targets`).
    """
    tt = trial.time.to(torch.float64)
    idx = torch.searchsorted(tt, time.to(torch.float64) - 1e-6).clamp_max(len(tt) - 1)
    if not torch.allclose(tt[idx], time.to(torch.float64), atol=1e-4):
        raise ValueError(f"{trial.source or 'trial'}: the given times are not trial sample times")
    mw = setup.marker_weights
    names = [n for n in (mw if mw is not None else model.marker_names) if n in model.marker_names and n in trial.names]
    mi = [model.marker_names.index(n) for n in names]
    ti = [trial.names.index(n) for n in names]
    w = torch.tensor([1.0 if mw is None else mw[n] for n in names], dtype=model.dtype, device=model.device)
    X = trial.xyz.to(dtype=model.dtype, device=model.device)[idx][:, ti]
    d2 = (marker_positions(model, q)[:, mi] - X).pow(2).sum(-1)
    f = torch.where(torch.isnan(d2), torch.zeros_like(d2), d2 * w).sum()
    for name, task in setup.coordinate_tasks.items():
        c = model.coordinate_names.index(name)
        if task.from_file:
            value = coordinate_targets(setup, [name], time, model)[:, 0]
        else:
            value = task.value if task.value is not None else model.topology.coordinate_defaults[c]
        f = f + task.weight * (q[:, c] - value).pow(2).sum()
    return float(f)
