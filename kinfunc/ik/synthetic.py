"""Synthetic trials with known answers, for tests, benchmarks and demos.

:func:`gait_motion` gives a gait-like motion of the built-in lower-body model (Gait2392
coordinate names); :func:`synthetic_trial` turns a model (possibly with changed scales and
marker offsets) and coordinates into a :class:`~kinfunc.MarkerTrial` with Gaussian noise and
random gaps.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..fk import marker_positions
from ..model import Model
from ..trial import MarkerTrial

__all__ = ["gait_motion", "rom_motion", "synthetic_trial", "perturbed_model"]

_D = math.pi / 180.0


def gait_motion(
    model: Model, n_frames: int, rate: float = 100.0, cadence: float = 1.0, speed: float = 1.3, heading: float = 0.0
) -> Tensor:
    """A gait-like motion ``q (T, C)`` (rad / m) for a model with Gait2392 coordinate names.

    Stride frequency ``cadence`` (Hz), forward ``speed`` (m/s) along the heading (rad about Y
    from +X). Coordinates the motion does not name stay at their defaults.
    """
    t = torch.arange(n_frames, dtype=torch.float64) / rate
    ph = 2 * math.pi * cadence * t
    s, c = torch.sin, torch.cos
    leg = lambda p: {  # noqa: E731
        "hip_flexion": (15 + 25 * s(p) + 3 * s(2 * p)) * _D,
        "hip_adduction": (2 + 4 * s(p + 0.6)) * _D,
        "hip_rotation": (3 + 6 * s(p - 0.4)) * _D,
        "knee_angle": -(32 + 26 * s(p + 1.1) + 6 * c(2 * p)) * _D,
        "ankle_angle": (4 + 12 * s(p + 2.0) + 4 * s(2 * p + 0.3)) * _D,
        "subtalar_angle": (3 + 6 * s(p + 0.8)) * _D,
    }
    vals = {
        "pelvis_tilt": (-4 + 2 * s(2 * ph)) * _D,
        "pelvis_list": (4 * s(ph + 0.3)) * _D,
        "pelvis_rotation": heading + (6 * s(ph)) * _D,
        "pelvis_tx": speed * t * math.cos(heading),
        "pelvis_ty": 0.93 + 0.02 * s(2 * ph),
        "pelvis_tz": -speed * t * math.sin(heading) + 0.02 * s(ph),
    }
    for side, shift in (("r", 0.0), ("l", math.pi)):
        for k, v in leg(ph + shift).items():
            vals[f"{k}_{side}"] = v
    q = model.default_q().to(torch.float64).expand(n_frames, -1).clone()
    for i, n in enumerate(model.coordinate_names):
        if n in vals:
            q[:, i] = vals[n]
    return q.to(model.dtype)


def rom_motion(model: Model, n_frames: int, rate: float = 100.0, period: float = 2.0) -> Tensor:
    """A range-of-motion trial ``q (T, C)``: standing, each hip circumducting, knees and ankles
    flexing, pelvis swaying (what a functional joint-centre trial does). Gait2392 names."""
    t = torch.arange(n_frames, dtype=torch.float64) / rate
    ph = 2 * math.pi * t / period
    s, c = torch.sin, torch.cos
    vals = {
        "pelvis_tilt": (-5 + 8 * s(0.5 * ph)) * _D,
        "pelvis_list": (6 * s(0.7 * ph)) * _D,
        "pelvis_rotation": (10 * s(0.3 * ph)) * _D,
        "pelvis_tx": 0.02 * s(0.4 * ph),
        "pelvis_ty": 0.90 + 0.02 * s(ph),
        "pelvis_tz": 0.02 * c(0.4 * ph),
    }
    for side, shift in (("r", 0.0), ("l", 1.3)):
        p = ph + shift
        vals[f"hip_flexion_{side}"] = (25 + 30 * s(p)) * _D
        vals[f"hip_adduction_{side}"] = (-5 + 18 * c(p)) * _D
        vals[f"hip_rotation_{side}"] = (20 * s(1.7 * p)) * _D
        vals[f"knee_angle_{side}"] = (-40 + 33 * s(1.3 * p)) * _D
        vals[f"ankle_angle_{side}"] = (12 * s(0.9 * p)) * _D
        vals[f"subtalar_angle_{side}"] = (12 * s(1.1 * p + 0.5)) * _D
    q = model.default_q().to(torch.float64).expand(n_frames, -1).clone()
    for i, n in enumerate(model.coordinate_names):
        if n in vals:
            q[:, i] = vals[n]
    return q.to(model.dtype)


def perturbed_model(
    model: Model,
    scales: Optional[dict] = None,
    offset_sigma: float = 0.0,
    seed: int = 0,
    offset_axes: Optional[Tensor] = None,
) -> Model:
    """A copy of ``model`` with uniform body scales (body name -> factor) and offsets moved by
    Gaussian noise of ``offset_sigma`` metres per axis (``offset_axes (M, 3)`` bool masks where)."""
    g = torch.Generator().manual_seed(seed)
    bs = model.body_scales.clone()
    for name, f in (scales or {}).items():
        bs[model.topology.body_index(name)] = f
    noise = torch.randn(model.marker_offsets.shape, generator=g, dtype=torch.float64).to(model.dtype) * offset_sigma
    if offset_axes is not None:
        noise = noise * offset_axes.to(noise.dtype)
    return model.replace(body_scales=bs, marker_offsets=model.marker_offsets + noise)


def synthetic_trial(
    model: Model, q: Tensor, rate: float = 100.0, noise: float = 0.0, gaps: float = 0.0, seed: int = 0
) -> MarkerTrial:
    """Markers of ``model`` at ``q (T, C)`` plus Gaussian ``noise`` (m, per axis) with a fraction
    ``gaps`` of samples missing (NaN) at random; float64, metres, model frame."""
    g = torch.Generator().manual_seed(seed)
    x = marker_positions(model, q).to(torch.float64)
    x = x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    if gaps > 0:
        miss = torch.rand(x.shape[:-1], generator=g, dtype=torch.float64) < gaps
        x = torch.where(miss[..., None], torch.full_like(x, float("nan")), x)
    T = q.shape[0]
    return MarkerTrial(
        names=model.marker_names,
        xyz=x,
        rate=rate,
        time=torch.arange(T, dtype=torch.float64) / rate,
        units="m",
        source="synthetic",
    )
