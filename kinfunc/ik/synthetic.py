"""Synthetic trials with known answers, for tests, benchmarks and demos.

:func:`gait_motion` gives a gait-like motion of the built-in lower-body model (Gait2392
coordinate names); :func:`synthetic_trial` turns a model (possibly with changed scales and
marker offsets) and coordinates into a :class:`~kinfunc.MarkerTrial` with Gaussian noise and
random gaps. :func:`nongait_motion` gives non-gait motions (squat, sit-to-stand, jump, a 360-degree
turn, lying and rolling over, arms overhead, a cartwheel) of a full-body OpenSim model
(Rajagopal / Hamner coordinate names), :func:`corrupt_trial` displaces a marker cluster and swaps
two labels over time windows, with the ground truth, and :func:`nongait_suite` combines them.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor

from ..fk import fk, marker_positions
from ..model import Model
from ..trial import MarkerTrial

__all__ = [
    "gait_motion",
    "rom_motion",
    "synthetic_trial",
    "perturbed_model",
    "NONGAIT_KINDS",
    "nongait_motion",
    "corrupt_trial",
    "nongait_suite",
]

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


# ---------------------------------------------------------------------------- non-gait motions

NONGAIT_KINDS = ("squat", "sit_to_stand", "jump", "turn360", "lying", "arms_overhead", "cartwheel")


def _ramp(u: Tensor, a: float, b: float) -> Tensor:
    """Quintic smoothstep: 0 for ``u <= a``, 1 for ``u >= b``, C2 in between."""
    x = ((u - a) / (b - a)).clamp(0.0, 1.0)
    return x * x * x * (10.0 - 15.0 * x + 6.0 * x * x)


def _bump(u: Tensor, a: float, b: float) -> Tensor:
    """``sin^2`` bump: 0 outside ``[a, b]``, 1 at the middle, C1."""
    x = ((u - a) / (b - a)).clamp(0.0, 1.0)
    return torch.sin(math.pi * x).square()


def _hold(u: Tensor, a: float, b: float, c: float, d: float) -> Tensor:
    """Rise over ``[a, b]``, hold 1, fall over ``[c, d]``."""
    return _ramp(u, a, b) - _ramp(u, c, d)


def _sides(vals: dict, name: str, v_r: Tensor, v_l: Optional[Tensor] = None) -> None:
    vals[f"{name}_r"] = v_r
    vals[f"{name}_l"] = v_r if v_l is None else v_l


def _nongait_angles(kind: str, u: Tensor) -> tuple[dict, dict]:
    """Angles (degrees) by coordinate name, and options for the translations:
    ``anchor_feet`` (keep the feet in place horizontally), ``lift`` (extra pelvis height, m,
    on top of floor contact), ``tx`` / ``tz`` (horizontal pelvis path, m)."""
    s = torch.sin
    z = torch.zeros_like(u)
    a: dict = {}
    opt: dict = {"anchor_feet": False, "lift": z, "tx": None, "tz": None}
    if kind == "squat":
        # one deep squat with a hold at the bottom; the feet stay flat (tilt + hip - knee +
        # ankle ~ 0 in the sagittal plane) and in place (knees out: the hip abduction is
        # balanced by a little internal rotation)
        d = _hold(u, 0.06, 0.40, 0.58, 0.92)
        a["pelvis_tilt"] = -22 * d
        a["pelvis_list"] = 2 * s(2 * math.pi * u) * d
        _sides(a, "hip_flexion", 110 * d)
        _sides(a, "hip_adduction", -10 * d**4)
        _sides(a, "hip_rotation", 2 * d**4)
        _sides(a, "knee_angle", 120 * d)
        _sides(a, "ankle_angle", 28 * d)
        _sides(a, "subtalar_angle", 4 * d)
        _sides(a, "mtp_angle", 15 * d)
        a["lumbar_extension"] = -15 * d
        a["lumbar_rotation"] = 4 * s(2 * math.pi * u)
        _sides(a, "arm_flex", 80 * d)
        _sides(a, "arm_add", -10 * d)
        _sides(a, "elbow_flex", 5 + 25 * d)
        _sides(a, "pro_sup", 40 + 30 * d)
        opt["anchor_feet"] = True
    elif kind == "sit_to_stand":
        # seated -> stand (hold) -> seated, leaning the trunk forward on each transition
        st = _hold(u, 0.15, 0.40, 0.60, 0.85)  # 1 standing
        sit = 1 - st
        lean = _bump(u, 0.10, 0.45) + _bump(u, 0.55, 0.90)
        a["pelvis_tilt"] = -5 * sit - 25 * lean
        _sides(a, "hip_flexion", 90 * sit + 25 * lean)
        _sides(a, "hip_adduction", -4 * sit)
        _sides(a, "knee_angle", 90 * sit + 5 * lean)
        _sides(a, "ankle_angle", 5 * sit + 8 * lean)
        a["lumbar_extension"] = -20 * lean - 5 * sit
        _sides(a, "arm_flex", 10 * sit + 40 * lean)
        _sides(a, "elbow_flex", 15 + 50 * sit)
        _sides(a, "pro_sup", 30 + 40 * sit)
        _sides(a, "wrist_flex", 10 * sit)
        opt["anchor_feet"] = True
    elif kind == "jump":
        # countermovement (arms swing back), push-off (arms swing forward-up, ankles
        # plantarflex), flight with a tuck, landing, recovery to standing
        crouch = _ramp(u, 0.08, 0.30) - _ramp(u, 0.30, 0.40)
        plant = _ramp(u, 0.31, 0.42) - _ramp(u, 0.60, 0.70)
        tuck = _bump(u, 0.45, 0.65)
        land = _ramp(u, 0.68, 0.76) - _ramp(u, 0.78, 0.95)
        swing = _ramp(u, 0.30, 0.45) - _ramp(u, 0.62, 0.82)
        a["pelvis_tilt"] = -25 * crouch - 15 * land
        _sides(a, "hip_flexion", 75 * crouch + 35 * tuck + 50 * land)
        _sides(a, "hip_adduction", -5 * crouch - 5 * tuck)
        _sides(a, "knee_angle", 85 * crouch + 45 * tuck + 60 * land)
        _sides(a, "ankle_angle", 25 * crouch - 35 * plant + 20 * land)
        _sides(a, "mtp_angle", 25 * plant)
        a["lumbar_extension"] = -15 * crouch - 10 * land + 5 * swing
        _sides(a, "arm_flex", -60 * crouch + 85 * swing)
        _sides(a, "arm_add", -15 * swing)
        _sides(a, "elbow_flex", 10 + 25 * crouch + 20 * swing)
        _sides(a, "pro_sup", 45 + z)
        opt["anchor_feet"] = True
        opt["lift"] = 0.29 * _bump(u, 0.40, 0.70)
    elif kind == "turn360":
        # a full turn (pelvis_rotation -pi -> pi, continuous) while stepping in place
        ph = 2 * math.pi * 3 * u
        env = _hold(u, 0.0, 0.06, 0.94, 1.0)
        st_r = torch.relu(s(ph)).square() * env
        st_l = torch.relu(-s(ph)).square() * env
        a["pelvis_rotation"] = -180 + 360 * _ramp(u, 0.03, 0.97)
        a["pelvis_list"] = 5 * (st_l - st_r)
        a["pelvis_tilt"] = -4 + z
        _sides(a, "hip_flexion", 45 * st_r, 45 * st_l)
        _sides(a, "hip_adduction", 3 * st_r, 3 * st_l)
        _sides(a, "hip_rotation", 12 * st_r, 12 * st_l)
        _sides(a, "knee_angle", 70 * st_r, 70 * st_l)
        _sides(a, "ankle_angle", 10 * st_r, 10 * st_l)
        _sides(a, "subtalar_angle", 5 * st_r, 5 * st_l)
        a["lumbar_rotation"] = 10 * (st_r - st_l)
        _sides(a, "arm_flex", 25 * (st_l - st_r), 25 * (st_r - st_l))
        _sides(a, "arm_add", -8 + z)
        _sides(a, "elbow_flex", 25 + 15 * st_l, 25 + 15 * st_r)
        _sides(a, "pro_sup", 50 + z)
    elif kind == "lying":
        # supine (pelvis_tilt +90: body along -X, face up) with leg raises, roll over to prone
        # (pelvis_rotation 0 -> 180 about the body's long axis), then a prone lumbar extension
        # and knee curls
        roll = _ramp(u, 0.45, 0.75)
        a["pelvis_tilt"] = 90 + 4 * s(2 * math.pi * u)
        a["pelvis_list"] = 6 * s(2 * math.pi * u + 0.5)
        a["pelvis_rotation"] = 180 * roll
        raise_r, raise_l = _bump(u, 0.06, 0.24), _bump(u, 0.22, 0.40)
        curl_r, curl_l = _bump(u, 0.78, 0.92), _bump(u, 0.84, 0.98)
        _sides(a, "hip_flexion", 70 * raise_r + 10 * _bump(u, 0.45, 0.75), 70 * raise_l)
        _sides(a, "hip_adduction", -8 + 20 * _bump(u, 0.45, 0.75), -8 + z)
        _sides(a, "knee_angle", 20 * raise_r + 100 * curl_r + 30 * _bump(u, 0.45, 0.75), 20 * raise_l + 100 * curl_l)
        _sides(a, "ankle_angle", 10 * raise_r - 25 * curl_r, 10 * raise_l - 25 * curl_l)
        a["lumbar_extension"] = 30 * _bump(u, 0.78, 0.98)
        a["lumbar_rotation"] = 20 * _bump(u, 0.45, 0.75)
        _sides(a, "arm_add", -30 + 35 * _bump(u, 0.42, 0.78))  # arms to the sides while rolling
        _sides(a, "arm_flex", 15 * _bump(u, 0.45, 0.75) - 20 * _bump(u, 0.78, 0.98))
        _sides(a, "elbow_flex", 20 + 60 * _bump(u, 0.78, 0.98))
        _sides(a, "pro_sup", 60 + z)
        opt["tz"] = -0.12 * math.pi * roll  # rolling without slipping
    elif kind == "arms_overhead":
        # arms up (abduction to the model's limit plus a little flexion), elbows bending with
        # the forearms up and behind the head, lumbar extension
        up = _hold(u, 0.05, 0.25, 0.75, 0.95)
        bend = _bump(u, 0.28, 0.50) + _bump(u, 0.50, 0.72)
        _sides(a, "arm_add", -120 * up)
        _sides(a, "arm_flex", 10 * up)
        _sides(a, "arm_rot", -80 * up)  # external rotation: elbow flexion lifts the forearm
        _sides(a, "elbow_flex", 5 + 95 * bend)
        _sides(a, "pro_sup", 20 + 60 * up)
        _sides(a, "wrist_flex", -20 * bend)
        a["lumbar_extension"] = 20 * up
        a["lumbar_bending"] = 6 * s(2 * math.pi * u) * up
        a["pelvis_tilt"] = 5 * up
        _sides(a, "hip_flexion", -5 * up)
        _sides(a, "ankle_angle", -10 * bend)
        opt["anchor_feet"] = True
    elif kind == "cartwheel":
        # pelvis_list -pi -> pi (continuous; starts and ends upside down, upright at the
        # middle), legs abducted, arms overhead (abducted), travelling along +Z
        r = _ramp(u, 0.02, 0.98)
        a["pelvis_list"] = -180 + 360 * r
        a["pelvis_tilt"] = 3 * s(2 * math.pi * u)
        a["pelvis_rotation"] = 4 * s(2 * math.pi * u + 1.0)
        _sides(a, "hip_adduction", -40 + 5 * s(4 * math.pi * u))
        _sides(a, "hip_flexion", 10 * s(4 * math.pi * u), -10 * s(4 * math.pi * u))
        _sides(a, "knee_angle", 10 + 10 * _bump(u, 0.4, 0.6))
        _sides(a, "arm_add", -118 + z)
        _sides(a, "arm_flex", 10 + z)
        _sides(a, "elbow_flex", 5 + z)
        _sides(a, "pro_sup", 60 + z)
        a["lumbar_bending"] = 8 * s(2 * math.pi * u)
        opt["tz"] = -1.2 + 2.4 * r
    else:
        raise ValueError(f"unknown non-gait motion {kind!r}; choose one of {', '.join(NONGAIT_KINDS)}")
    return a, opt


def _soft_floor(y: Tensor, tau: float = 0.01) -> Tensor:
    """Smooth minimum over the last axis (m), ``-tau * logsumexp(-y / tau)``."""
    return -tau * torch.logsumexp(-y / tau, dim=-1)


def _points(model: Model, q: Tensor) -> Tensor:
    """Markers (or body origins for a model without markers), ``(..., P, 3)`` float64."""
    if model.marker_names:
        return marker_positions(model, q).to(torch.float64)
    return fk(model, q).t.to(torch.float64)


def nongait_motion(model: Model, kind: str, n_frames: int = 200, rate: float = 100.0) -> Tensor:
    """A non-gait motion ``q (T, C)`` (rad / m, ``model.dtype``) of a full-body OpenSim model
    with Rajagopal / Hamner coordinate names (``pelvis_*``, ``hip_flexion_r``, ``knee_angle_r``,
    ``lumbar_extension``, ``arm_flex_r``, ``elbow_flex_r``, ...; ``_l`` likewise).

    ``kind`` is one of :data:`NONGAIT_KINDS`:

    * ``"squat"``: a deep squat (knees 120 deg, hips 110 deg, ankles 28 deg dorsiflexed,
      pelvis tilted 22 deg forward and lowered), arms forward.
    * ``"sit_to_stand"``: seated (hips and knees 90 deg) -> standing -> seated, leaning forward.
    * ``"jump"``: countermovement jump with an arm swing; the pelvis rises about 0.3 m.
    * ``"turn360"``: ``pelvis_rotation`` from -pi to pi (a full turn) while stepping in place.
    * ``"lying"``: supine with leg raises, rolling over to prone, prone back extension.
    * ``"arms_overhead"``: arms raised overhead as far as the coordinate ranges allow, elbows
      bending, lumbar extension.
    * ``"cartwheel"``: ``pelvis_list`` from -pi to pi (a full turn about the forward axis,
      upside down at both ends) with legs and arms abducted, travelling along +Z.

    The motion spans the trial whatever ``n_frames`` is (``rate`` only sets the duration).
    Coordinates a motion does not name (or the model lacks) stay at their defaults; every
    clamped coordinate is clamped to its range. The pelvis height follows from forward
    kinematics so that the lowest marker (a smooth minimum) stays at the height of the lowest
    marker of the default pose (the floor), plus the flight phase of the jump; for motions
    with planted feet the pelvis moves horizontally so the feet stay in place.

    Locked coordinates stay at their defaults; a coordinate range that cuts the motion by
    more than 1 deg (e.g. pelvis angles clamped to +-90 deg in some generic models, which
    stops the turns) is warned about.

    Pelvis angles are continuous in ``q`` (no wrapping). Note that ``pelvis_list`` = +-90 deg
    (passed by ``"cartwheel"``) is gimbal lock of OpenSim's Z-X-Y pelvis sequence, and that
    orientations with ``|pelvis_list| > 90`` deg have a second representation with
    ``|pelvis_list| < 90`` deg: compare pelvis orientations as rotations, not angles.
    """
    if n_frames < 2:
        raise ValueError(f"n_frames must be at least 2, not {n_frames}")
    names = model.coordinate_names
    u = torch.arange(n_frames, dtype=torch.float64) / (n_frames - 1)
    angles, opt = _nongait_angles(kind, u)
    dev = model.device
    q0 = model.default_q().to(torch.float64)
    q = q0.cpu().expand(n_frames, -1).clone()
    locked = model.topology.coordinate_locked
    for n, v in angles.items():
        if n in names and not locked[names.index(n)]:
            q[:, names.index(n)] = v * _D
    lo = torch.tensor([r[0] for r in model.topology.coordinate_ranges], dtype=torch.float64)
    hi = torch.tensor([r[1] for r in model.topology.coordinate_ranges], dtype=torch.float64)
    clamped = torch.tensor(model.topology.coordinate_clamped, dtype=torch.bool)
    lo = torch.where(clamped, lo, torch.full_like(lo, -math.inf))
    hi = torch.where(clamped, hi, torch.full_like(hi, math.inf))
    qc = torch.maximum(torch.minimum(q, hi), lo)
    cut = (qc - q).abs().amax(0)
    if (cut > 1.0 * _D).any():
        warnings.warn(
            f"nongait_motion({kind!r}): coordinate ranges cut the motion by up to "
            + ", ".join(f"{names[i]} {float(cut[i]) / _D:.0f} deg" for i in torch.nonzero(cut > _D).flatten().tolist()),
            stacklevel=2,
        )
    q = qc

    idx = {k: names.index(k) for k in ("pelvis_tx", "pelvis_ty", "pelvis_tz") if k in names}
    if len(idx) == 3:
        ix, iy, iz = idx["pelvis_tx"], idx["pelvis_ty"], idx["pelvis_tz"]
        zero = q.clone()
        zero[:, [ix, iy, iz]] = 0.0
        pts = _points(model, zero.to(model.dtype).to(dev)).cpu()  # (T, P, 3), pelvis at origin
        floor = _soft_floor(_points(model, q0.to(model.dtype).to(dev)).cpu()[:, 1])
        q[:, iy] = floor - _soft_floor(pts[..., 1]) + opt["lift"]
        q[:, ix] = q0[ix].cpu()
        q[:, iz] = q0[iz].cpu()
        feet = [b for b in ("calcn_r", "calcn_l") if b in model.body_names]
        if opt["anchor_feet"] and feet:
            bi = [model.body_names.index(b) for b in feet]
            f = fk(model, zero.to(model.dtype).to(dev)).t.to(torch.float64).cpu()[:, bi].mean(1)  # (T, 3)
            f0 = fk(model, q0.to(model.dtype).to(dev)).t.to(torch.float64).cpu()[bi].mean(0)  # (3,)
            q[:, ix] = f0[0] - f[:, 0]
            q[:, iz] = f0[2] - f[:, 2]
        if opt["tx"] is not None:
            q[:, ix] = q[:, ix] + opt["tx"]
        if opt["tz"] is not None:
            q[:, iz] = q[:, iz] + opt["tz"]
        q = torch.maximum(torch.minimum(q, hi), lo)
    return q.to(device=dev, dtype=model.dtype)


# ---------------------------------------------------------------------------- corruption


def _window(trial: MarkerTrial, t0: float, t1: float) -> Tensor:
    t = trial.time.to(torch.float64).cpu()
    return (t >= t0 - 1e-9) & (t < t1 - 1e-9)


def corrupt_trial(
    trial: MarkerTrial,
    *,
    displaced: Optional[tuple[Union[str, Sequence[str]], Any, float, float]] = None,
    swap: Optional[tuple[str, str, float, float]] = None,
    seed: int = 0,
) -> tuple[MarkerTrial, dict]:
    """Label errors with a known answer.

    * ``displaced=(marker_names, offset, t0, t1)``: the markers (a name or names) move by a fixed
      ``offset`` (m, ``(3,)``; a number gives that length in a direction drawn with ``seed``)
      over the frames with ``t0 <= time < t1`` (seconds) -- e.g. a cluster that slipped.
    * ``swap=(name_a, name_b, t0, t1)``: the two markers' data are exchanged (their labels are
      swapped) over ``t0 <= time < t1``. Applied after the displacement.

    Missing samples stay missing (a swap moves them with the data). Returns the corrupted
    trial (``meta["corruption"]`` = the truth) and the truth: ``{"mask": (T, M) bool, True where
    a sample carries a wrong label or position; "displaced": {"markers", "offset", "frames",
    "t0", "t1"} or None; "swap": {"markers", "frames", "t0", "t1"} or None}``, frames as
    ``LongTensor`` indices.
    """
    names = trial.names
    x = trial.xyz.clone()
    T, M = trial.n_frames, trial.n_markers
    mask = torch.zeros(T, M, dtype=torch.bool)
    truth: dict = {"mask": mask, "displaced": None, "swap": None}

    def index(n: str) -> int:
        if n not in names:
            raise KeyError(f"{trial.source or 'trial'}: no marker {n!r}; available: {', '.join(names)}")
        return names.index(n)

    if displaced is not None:
        mk, off, t0, t1 = displaced
        mk = (mk,) if isinstance(mk, str) else tuple(mk)
        idx = [index(n) for n in mk]
        if isinstance(off, (int, float)):
            g = torch.Generator().manual_seed(seed)
            d = torch.randn(3, generator=g, dtype=torch.float64)
            off = float(off) * d / d.norm()
        off = torch.as_tensor(off, dtype=torch.float64).reshape(3)
        w = _window(trial, t0, t1)
        fr = torch.nonzero(w).flatten()
        sel = x[fr[:, None], torch.tensor(idx)[None, :]]
        x[fr[:, None], torch.tensor(idx)[None, :]] = sel + off.to(x.dtype).to(x.device)
        mask[fr[:, None], torch.tensor(idx)[None, :]] = True
        truth["displaced"] = {"markers": mk, "offset": off, "frames": fr, "t0": float(t0), "t1": float(t1)}
    if swap is not None:
        na, nb, t0, t1 = swap
        ia, ib = index(na), index(nb)
        if ia == ib:
            raise ValueError(f"swap needs two different markers, not {na!r} twice")
        w = _window(trial, t0, t1)
        fr = torch.nonzero(w).flatten()
        xa, xb = x[fr, ia].clone(), x[fr, ib].clone()
        x[fr, ia], x[fr, ib] = xb, xa
        mask[fr, ia] = True
        mask[fr, ib] = True
        truth["swap"] = {"markers": (na, nb), "frames": fr, "t0": float(t0), "t1": float(t1)}
    meta = dict(trial.meta)
    meta["corruption"] = truth
    return dataclasses.replace(trial, xyz=x, meta=meta), truth


def nongait_suite(
    model: Model,
    n_frames: int = 200,
    noise: float = 0.005,
    gaps: float = 0.2,
    seed: int = 0,
    *,
    rate: float = 100.0,
    kinds: Sequence[str] = NONGAIT_KINDS,
    displaced_markers: Sequence[str] = ("RTH1", "RTH2", "RTH3"),
    displacement: Sequence[float] = (0.08, 0.0, 0.06),
    swap_markers: tuple[str, str] = ("RLFC", "LLFC"),
) -> list[tuple[str, Tensor, MarkerTrial, dict]]:
    """Every non-gait motion as ``(kind, q_true (T, C), trial, truth)``: markers of ``model``
    with Gaussian ``noise`` (m) and a fraction ``gaps`` missing (:func:`synthetic_trial`,
    seed ``seed + k``), then (:func:`corrupt_trial`) the ``displaced_markers`` cluster moved
    by ``displacement`` (m) over the middle third of the trial and the two ``swap_markers``
    (defaults: the right thigh cluster and the lateral femoral condyles of the Rajagopal /
    Arnold marker set) swapped over frames ``[0.75 T, 0.85 T)``. ``truth`` is
    :func:`corrupt_trial`'s plus ``"kind"``, ``"noise"`` and ``"gaps"``."""
    missing = [n for n in (*displaced_markers, *swap_markers) if n not in model.marker_names]
    if missing:
        raise KeyError(f"nongait_suite: model has no marker(s) {missing}; pass displaced_markers= / swap_markers=")
    out = []
    for k, kind in enumerate(kinds):
        q = nongait_motion(model, kind, n_frames, rate)
        tr = synthetic_trial(model, q, rate=rate, noise=noise, gaps=gaps, seed=seed + k)
        t = lambda f: float(f) / rate  # noqa: E731  (time of frame f)
        tr, truth = corrupt_trial(
            tr,
            displaced=(tuple(displaced_markers), tuple(displacement), t(n_frames // 3), t(2 * n_frames // 3)),
            swap=(swap_markers[0], swap_markers[1], t(round(0.75 * n_frames)), t(round(0.85 * n_frames))),
            seed=seed + k,
        )
        truth.update(kind=kind, noise=noise, gaps=gaps)
        out.append((kind, q, tr, truth))
    return out
