"""Inverse kinematics over whole trials (time is a batch axis).

``solve(model, trial, fit=..., setup=..., solver=...)`` -> :class:`IKResult`;
``scale_subject(model, trials)`` -> :class:`SubjectFit`; ``model_height(model)`` -> the model's
standing height (m), which ``height=`` of both scales the scale prior to. The objective is a set of pure
functions (:mod:`kinfunc.ik.problem`); the solvers are batched Gauss-Newton/Levenberg-Marquardt
with a Schur complement for shared parameters (:mod:`kinfunc.ik.gn`) and L-BFGS over everything
(:mod:`kinfunc.ik.lbfgs`). Those building blocks are imported from their modules; this package
exports what a user calls.
"""
import importlib as _importlib
import warnings as _warnings

from .evaluate import setup_objective
from .gn import GNOptions
from .keypoints import smpl_to_anatomical
from .lbfgs import LBFGSOptions
from .quality import FitQuality, MarkerIssue
from .scaling import SubjectFit, model_height, scale_subject
from .setup import CoordinateTable, CoordinateTask, IKSetup
from .solve import FIT_GROUPS, IKError, IKResult, prepare, solve

__all__ = [
    "CoordinateTable",
    "CoordinateTask",
    "FIT_GROUPS",
    "FitQuality",
    "GNOptions",
    "IKError",
    "IKResult",
    "IKSetup",
    "LBFGSOptions",
    "MarkerIssue",
    "SubjectFit",
    "scale_subject",
    "setup_objective",
    "smpl_to_anatomical",
    "solve",
]
# also here, outside __all__ (which stays at 15 names, tests/test_layers.py): model_height, the
# standing height that solve(..., height=) and scale_subject(..., height=) scale the prior to;
# prepare, a model's kinematics for many solves (solve(..., kinematics=prepare(model)))

# solver internals once exported here: still reachable for one release, with a warning
_MOVED = {
    "IKProblem": "problem", "frame_residual": "problem", "frame_residuals": "problem", "objective": "problem",
    "prior_residuals": "problem", "smooth_residuals": "problem", "build_problem": "solve",
    "frame_jacobians": "gn", "solve_gn": "gn", "solve_lbfgs": "lbfgs", "initial_q": "init", "kabsch": "init",
    "rigid_root_fit": "init", "root_coordinates": "init", "segment_start": "start",
}


def __getattr__(name: str):
    if name in _MOVED:
        mod = f"kinfunc.ik.{_MOVED[name]}"
        _warnings.warn(f"kinfunc.ik.{name} is a solver internal and leaves kinfunc.ik's names in the next release; "
                       f"import it from {mod}", DeprecationWarning, stacklevel=2)
        return getattr(_importlib.import_module(mod), name)
    raise AttributeError(f"module 'kinfunc.ik' has no attribute '{name}'")
