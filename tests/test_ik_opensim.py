"""OpenSim parity: whole-trial IK on OpenSim's Gait2392 and Gait10dof examples (the scaled
models, the setups' marker weights, coordinate tasks and time ranges) against OpenSim 4.6's
results stored in the shared data (``opensim46_*_ik.mot``, ``*_marker_errors.sto``).

Needs only the data (OpenSim itself is not run here; see ``bench/bench_ik.py``). The objective
compared is evaluated independently of the solver, at OpenSim's ``q`` and at ours:
``sum_t [ sum_m w_m |p_m(q_t) - x_mt|^2 + sum_c w_c (q_tc - value_c)^2 ]`` over present markers.
"""

from __future__ import annotations

import math

import pytest
import torch

import kinfunc as kf
from kinfunc.io import load_ik_setup, load_osim, load_trc, read_mot
from kinfunc.model import Motion

from .shared import data

CASES = {
    "gait2392": ("opensim-gait2392", "subject01_simbody.osim", "subject01_Setup_IK.xml", "subject01_walk1.trc", "walk1"),
    "gait10dof": ("opensim-gait10dof", "subject01.osim", "walk_Setup_IK.xml", "subject01_walk.trc", "walk"),
}


def _load(case):
    folder, osim, setup, trc, stem = CASES[case]
    root = data(folder)
    model = load_osim(root / osim)
    su = load_ik_setup(root / setup)
    trial = load_trc(root / trc)
    ref = read_mot(root / f"opensim46_{stem}_ik.mot", model=model)
    errs = read_mot(root / f"opensim46_{stem}_ik_marker_errors.sto")
    return model, su, trial, ref, errs


def objective(model, setup, trial, time, q):
    """The IK objective (see module docstring) of ``q (T, C)`` at trial times ``time (T,)``."""
    idx = torch.searchsorted(trial.time.to(torch.float64), time.to(torch.float64) - 1e-6)
    assert torch.allclose(trial.time.to(torch.float64)[idx], time.to(torch.float64), atol=1e-4)
    X = trial.xyz.to(model.dtype)[idx]  # (T, M, 3)
    names = [n for n in setup.marker_weights if n in model.marker_names and n in trial.names]
    mi = [model.marker_names.index(n) for n in names]
    ti = [trial.names.index(n) for n in names]
    w = torch.tensor([setup.marker_weights[n] for n in names], dtype=model.dtype)
    p = kf.marker_positions(model, q)[:, mi]
    d2 = (p - X[:, ti]).pow(2).sum(-1)
    f = torch.where(torch.isnan(d2), torch.zeros_like(d2), d2 * w).sum()
    for name, task in setup.coordinate_tasks.items():
        c = model.coordinate_names.index(name)
        value = task.value if task.value is not None else float(model.topology.coordinate_defaults[c])
        f = f + task.weight * (q[:, c] - value).pow(2).sum()
    return float(f)


@pytest.fixture(scope="module", params=sorted(CASES))
def solved(request):
    model, su, trial, ref, errs = _load(request.param)
    res = kf.ik.solve(model, trial, setup=su)
    return request.param, model, su, trial, ref, errs, res


def test_same_frames_and_markers(solved):
    case, model, su, trial, ref, errs, res = solved
    assert res.q.shape == (ref.values.shape[0], model.topology.n_coordinates)
    assert torch.allclose(res.time.double(), torch.as_tensor(ref.time).double(), atol=1e-4)
    # OpenSim uses the markers with an applied task that the model and the trial both have: 31
    assert len(res.marker_names) == 31
    assert set(res.marker_names) == {n for n in su.marker_weights if n in model.marker_names and n in trial.names}


def test_objective_not_worse_than_opensim(solved):
    case, model, su, trial, ref, errs, res = solved
    f_ours = objective(model, su, trial, res.time, res.q)
    f_osim = objective(model, su, trial, res.time, ref.q_for(model))
    assert f_ours <= f_osim * 1.001, (case, f_ours, f_osim)


def test_coordinates_match_opensim(solved):
    case, model, su, trial, ref, errs, res = solved
    rms = (res.q - ref.q_for(model)).pow(2).mean(0).sqrt()
    for name, r, mo in zip(model.coordinate_names, rms.tolist(), model.topology.coordinate_motion):
        if mo is Motion.TRANSLATIONAL:
            assert r < 0.003, (case, name, r)  # m
        else:
            assert math.degrees(r) < 0.5, (case, name, math.degrees(r))


def test_marker_errors_match_opensim(solved):
    case, model, su, trial, ref, errs, res = solved
    col = errs.names.index("marker_error_RMS")
    osim_rms = torch.as_tensor(errs.values[:, col], dtype=res.marker_rms.dtype)
    assert res.marker_rms.mean() <= osim_rms.mean() + 1e-4
    assert (res.marker_rms - osim_rms).abs().max() < 1e-3  # m, frame by frame
