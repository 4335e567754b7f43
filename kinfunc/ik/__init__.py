"""Inverse kinematics over whole trials (time is a batch axis).

``solve(model, trial, fit=..., setup=..., solver=...)`` -> :class:`IKResult`. The objective is
a set of pure functions (:mod:`kinfunc.ik.problem`); the solvers are batched
Gauss-Newton/Levenberg-Marquardt with a Schur complement for shared parameters
(:mod:`kinfunc.ik.gn`) and L-BFGS over everything (:mod:`kinfunc.ik.lbfgs`).
"""
from .evaluate import setup_objective
from .gn import GNOptions, frame_jacobians, solve_gn
from .init import initial_q, kabsch, rigid_root_fit, root_coordinates
from .lbfgs import LBFGSOptions, solve_lbfgs
from .problem import (
    IKProblem,
    frame_residual,
    frame_residuals,
    objective,
    prior_residuals,
    smooth_residuals,
)
from .quality import FitQuality, MarkerIssue
from .scaling import SubjectFit, scale_subject
from .setup import CoordinateTable, CoordinateTask, IKSetup
from .start import segment_start
from .solve import FIT_GROUPS, IKError, IKResult, build_problem, solve

__all__ = [
    "CoordinateTable",
    "CoordinateTask",
    "FIT_GROUPS",
    "FitQuality",
    "GNOptions",
    "IKError",
    "IKProblem",
    "IKResult",
    "IKSetup",
    "LBFGSOptions",
    "SubjectFit",
    "MarkerIssue",
    "build_problem",
    "frame_jacobians",
    "frame_residual",
    "frame_residuals",
    "initial_q",
    "kabsch",
    "objective",
    "prior_residuals",
    "rigid_root_fit",
    "scale_subject",
    "segment_start",
    "root_coordinates",
    "smooth_residuals",
    "solve",
    "solve_gn",
    "solve_lbfgs",
    "setup_objective",
]
