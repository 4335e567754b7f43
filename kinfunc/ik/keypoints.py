"""From SMPL-style joint positions to anatomical coordinates.

SMPL's 24 "joints" are points (pelvis, hips, knees, ankles, feet, spine, neck, head, collars,
shoulders, elbows, wrists, hands) regressed from the mesh; its 3-DOF ball rotations are not
anatomical angles (a knee has three). :func:`smpl_to_anatomical` fits
``kf.models.full_body(marker_set="smpl24")`` (whose keypoints sit at the landmarks SMPL's joints
approximate) to those points: segment scales shared by the trial, then every frame's pose, with
joint limits and, by default, smoothness -- one batched call. The result is an
:class:`~kinfunc.ik.IKResult` whose ``q (T, C)`` holds OpenSim-named coordinates (hip
flexion/adduction/rotation, knee angle, ankle, lumbar, arm flexion, elbow, ...).

Accuracy (synthetic, the model's own motions rendered to the 24 points with a subject 8 % taller
or shorter per segment and 1 cm noise; tests/test_keypoints.py): see :func:`smpl_to_anatomical`.
Forearm pronation, hip and humeral rotation and the wrists are not observable from 24 points and
come out near their defaults or arbitrary within their ranges.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..model import Model
from ..trial import MarkerTrial
from .setup import IKError
from .solve import IKResult, solve

__all__ = ["smpl_to_anatomical"]


def smpl_to_anatomical(
    joints: Tensor,
    rate: float = 30.0,
    *,
    confidence: Optional[Tensor] = None,
    model: Optional[Model] = None,
    fit_scales: bool = True,
    smoothness: float = 1.0,
    **solve_options,
) -> IKResult:
    """Anatomical coordinates from SMPL joint positions ``joints (T, 24, 3)`` (metres, SMPL's
    joint order: pelvis, left_hip, right_hip, spine1, ..., right_hand; Y up as SMPL's
    canonical frame) sampled at ``rate`` Hz; ``confidence (T, 24)`` optional weights in [0, 1].

    ``model``: the anatomical model (default ``kf.models.full_body("smpl24")`` in the joints'
    dtype); ``fit_scales``: fit its segment scales per axis, left and right equal, to the
    subject (else the model's proportions are kept); ``smoothness``: the weight of squared
    second differences of the coordinates (0 for frames that are not a motion). Other options
    go to :func:`kinfunc.ik.solve`. Returns its :class:`~kinfunc.ik.IKResult` (``res.q (T, C)``,
    ``res.model`` the scaled model, ``res.quality``).

    Measured (``python bench/bench_full_body.py``) on the model's seven synthetic motions, 120
    frames, a subject 8 % off the model per segment, 1 cm noise per axis: hip flexion/adduction,
    knee, arm flexion/adduction, elbow and lumbar angles 2.8-4.1 deg RMS on average (worst single
    angle 6-8 deg), arms overhead included."""
    if joints.ndim != 3 or joints.shape[1:] != (24, 3):
        raise IKError(f"smpl_to_anatomical: joints of shape {tuple(joints.shape)}; expected (T, 24, 3) in SMPL's joint order")
    if model is None:
        from ..models import full_body

        model = full_body("smpl24", dtype=joints.dtype if joints.is_floating_point() else torch.float64)
    names = model.marker_names
    if len(names) != 24:
        raise IKError(f"smpl_to_anatomical: the model has {len(names)} markers; give one with the 24 smpl24 keypoints")
    T = joints.shape[0]
    trial = MarkerTrial(
        names=tuple(names),
        xyz=joints.detach().to(torch.float64).cpu(),
        rate=float(rate),
        time=torch.arange(T, dtype=torch.float64) / float(rate),
        source="SMPL joints",
        confidence=None if confidence is None else confidence.detach().to(torch.float64).cpu(),
    )
    fit = ("pose", "segment_scales") if fit_scales else ("pose",)
    opts = dict(scale_mode="per_axis", symmetric=True) if fit_scales else {}
    opts.update(solve_options)
    return solve(model, trial, fit=fit, smoothness=smoothness, **opts)
