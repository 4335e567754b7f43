"""The built-in walking trial and the demo pipeline (``kinfunc demo``).

:func:`normative_gait` gives joint angles of normal adult walking for the built-in 18-DOF
model: each coordinate is a set of key points per percent of the gait cycle (0 % = right heel
strike), shaped after textbook normative curves (sagittal hip, knee and ankle as in the
classic gait-laboratory references, smaller frontal/transverse motions), made periodic and
smooth by a least-squares Fourier series. The left leg is the right leg half a cycle later.
Values follow Gait2392 signs: hip flexion +, knee flexion -, ankle dorsiflexion +.

:func:`demo_subject` perturbs the generic model (segment scales, marker placement) and
:func:`demo_trial` turns the motion into markers with soft-tissue-like noise (slow,
correlated per segment), white noise and gaps. :func:`run_demo` fits scales, offsets and
poses and compares with the known truth.
"""
from __future__ import annotations

import dataclasses
import math
import time as _time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from .model import Model
from .trial import MarkerTrial

__all__ = ["GAIT_KEYPOINTS", "DemoResult", "demo_subject", "demo_trial", "normative_gait", "periodic_curve", "run_demo"]

# Key points (percent of the gait cycle, degrees) of one stride of the right leg, starting at
# right heel strike; toe-off near 60 %. Written for this project from the usual shapes.
GAIT_KEYPOINTS: dict[str, tuple[tuple[float, float], ...]] = {
    # flexed ~30 deg at heel strike, extends through stance to ~-10 deg at 50 %, flexes in swing
    "hip_flexion": ((0, 30), (10, 27), (30, 8), (50, -10), (58, -5), (70, 12), (85, 31), (93, 33)),
    # loading-response bump ~18 deg at 15 %, near extension mid-stance, swing peak ~63 deg at 72 %
    "knee_angle": ((0, -4), (6, -10), (15, -18), (28, -9), (40, -4), (50, -8), (60, -38), (72, -63),
                   (85, -40), (95, -8)),
    # plantarflexion after heel strike, dorsiflexion to ~10 deg late stance, ~-18 deg at toe-off
    "ankle_angle": ((0, 0), (7, -6), (20, 4), (40, 9), (48, 10), (55, 0), (62, -18), (70, -10),
                    (80, 0), (92, 2)),
    "hip_adduction": ((0, 1), (15, 7), (35, 4), (50, 0), (62, -6), (75, -4), (90, 0)),
    "hip_rotation": ((0, 3), (20, 0), (45, -4), (65, 2), (85, 5)),
    "subtalar_angle": ((0, -2), (12, 4), (40, 2), (60, -4), (80, -2)),
}

# pelvis (degrees), right heel strike at 0 %
PELVIS_KEYPOINTS: dict[str, tuple[tuple[float, float], ...]] = {
    "pelvis_tilt": ((0, -7), (15, -9), (40, -6), (50, -7), (65, -9), (90, -6)),
    "pelvis_list": ((0, 0), (15, 4), (35, 2), (50, 0), (65, -4), (85, -2)),
    "pelvis_rotation": ((0, 5), (25, 0), (50, -5), (75, 0)),
}

_D = math.pi / 180.0


def periodic_curve(keypoints, phase: np.ndarray, harmonics: int = 6) -> np.ndarray:
    """Smooth periodic curve through ``keypoints`` ``((percent, value), ...)`` evaluated at
    ``phase`` (fraction of the cycle, any real): least-squares Fourier series of ``harmonics``
    harmonics, lightly regularised so it does not ring between key points."""
    p = np.array([k[0] for k in keypoints], dtype=np.float64) / 100.0
    v = np.array([k[1] for k in keypoints], dtype=np.float64)

    def basis(x):
        cols = [np.ones_like(x)]
        for h in range(1, harmonics + 1):
            cols += [np.cos(2 * np.pi * h * x), np.sin(2 * np.pi * h * x)]
        return np.stack(cols, -1)

    A = basis(p)
    reg = np.diag([0.0] + [1e-3 * h**4 for h in range(1, harmonics + 1) for _ in (0, 1)])
    coef = np.linalg.solve(A.T @ A + reg, A.T @ v)
    return basis(np.asarray(phase, dtype=np.float64)) @ coef


def normative_gait(model: Model, strides: float = 2.0, rate: float = 100.0, stride_time: float = 1.1,
                   speed: float = 1.3, pelvis_height: float = 0.93) -> Tensor:
    """Normal walking ``q (T, C)`` (rad / m) for a model with Gait2392 coordinate names.

    ``strides`` gait cycles of ``stride_time`` seconds at ``rate`` Hz, walking along +X at
    ``speed`` m/s with the pelvis at ``pelvis_height`` m (two small dips per stride, at double
    support). Coordinates the motion does not name stay at their defaults.
    """
    T = int(round(strides * stride_time * rate))
    t = np.arange(T) / rate
    ph = t / stride_time
    vals = {}
    for name, kp in PELVIS_KEYPOINTS.items():
        vals[name] = periodic_curve(kp, ph) * _D
    vals["pelvis_tx"] = speed * t
    vals["pelvis_ty"] = pelvis_height + 0.012 * np.cos(4 * np.pi * (ph - 0.25))
    vals["pelvis_tz"] = 0.015 * np.sin(2 * np.pi * ph)
    for side, shift in (("r", 0.0), ("l", 0.5)):
        for name, kp in GAIT_KEYPOINTS.items():
            vals[f"{name}_{side}"] = periodic_curve(kp, ph - shift) * _D
    q = model.default_q().to(torch.float64).expand(T, -1).clone()
    for i, n in enumerate(model.coordinate_names):
        if n in vals:
            q[:, i] = torch.from_numpy(np.asarray(vals[n], dtype=np.float64))
    return q.to(model.dtype)


# a synthetic subject: taller than the generic model, asymmetric a little
SUBJECT_SCALES = {"pelvis": 1.05, "femur_r": 1.06, "femur_l": 1.05, "tibia_r": 1.04, "tibia_l": 1.05}


def _offset_mask(model: Model) -> Tensor:
    """``(M, 3)`` bool: which offset axes the demo subject moves (and the fit frees): not the foot
    markers (they trade off against ankle/subtalar angles), pelvis markers in X and Z only."""
    topo = model.topology
    rows = []
    for b in topo.marker_bodies:
        foot = topo.body_names[b].startswith(("calcn", "talus"))
        rows.append([not foot, (b != 0) and not foot, not foot])
    return torch.tensor(rows)


def demo_subject(model: Model, offset_sigma: float = 0.008, seed: int = 7) -> Model:
    """The demo's subject: ``model`` with :data:`SUBJECT_SCALES` and marker offsets displaced by
    ``offset_sigma`` m per free axis (see :func:`kinfunc.ik.synthetic.perturbed_model`)."""
    from .ik.synthetic import perturbed_model

    return perturbed_model(model, SUBJECT_SCALES, offset_sigma=offset_sigma, seed=seed, offset_axes=_offset_mask(model))


def demo_trial(subject: Model, q: Tensor, rate: float = 100.0, soft_tissue: float = 0.003, white: float = 0.001,
               n_gaps: int = 4, seed: int = 1, source: str = "builtin:walk") -> MarkerTrial:
    """Markers of ``subject`` at ``q (T, C)`` with measurement artefacts, float64 metres, model frame.

    * soft tissue: per body a slow 3-D wobble (sum of sinusoids, 0.7-3 Hz, ``soft_tissue`` m
      RMS per axis) shared by its markers, plus a smaller per-marker slow part;
    * white noise ``white`` m per axis;
    * ``n_gaps`` gaps of 8-25 frames on random markers (NaN).
    """
    from .ik.synthetic import synthetic_trial

    trial = synthetic_trial(subject, q, rate=rate, noise=white, gaps=0.0, seed=seed)
    rng = np.random.default_rng(seed)
    T, M = trial.xyz.shape[:2]
    t = np.arange(T) / rate
    topo = subject.topology

    def wobble(amp, n):
        out = np.zeros((n, T, 3))
        for _ in range(3):
            f = rng.uniform(0.7, 3.0, size=(n, 1, 3))
            phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 3))
            out += np.sin(2 * np.pi * f * t[None, :, None] + phase)
        return amp * out / math.sqrt(1.5)  # sum of 3 unit sines has variance 1.5

    per_body = wobble(soft_tissue, topo.n_bodies)  # (B, T, 3)
    per_marker = wobble(0.3 * soft_tissue, M)
    stt = per_body[list(topo.marker_bodies)] + per_marker  # (M, T, 3)
    xyz = trial.xyz.numpy() + stt.transpose(1, 0, 2)
    for _ in range(n_gaps):
        m = int(rng.integers(M))
        n = int(rng.integers(8, 26))
        s = int(rng.integers(0, max(1, T - n)))
        xyz[s:s + n, m] = np.nan
    return dataclasses.replace(trial, xyz=torch.from_numpy(xyz), source=source,
                               meta={"generator": "kinfunc.demo.demo_trial", "soft_tissue_m": soft_tissue,
                                     "white_noise_m": white, "gaps": n_gaps})


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` produced: the IK result, the trial, the truth and the scores.

    ``angle_rms_deg``: coordinate name -> RMS error (degrees) of fitted vs true joint angles;
    ``scale_error``: body -> relative error of the fitted scale; ``files``: name -> path.
    """

    result: object
    trial: MarkerTrial
    q_true: Tensor
    subject: Model
    angle_rms_deg: dict
    scale_error: dict
    wall_time: float
    files: dict

    def summary(self) -> str:
        r = self.result
        rms = r.marker_rms[torch.isfinite(r.marker_rms)] * 1e3
        ang = list(self.angle_rms_deg.values())
        worst = max(self.angle_rms_deg, key=self.angle_rms_deg.get)
        lines = [
            f"trial: {self.trial.n_frames} frames @ {self.trial.rate:g} Hz, {len(r.marker_names)} markers "
            f"(soft-tissue + white noise, {self.trial.meta.get('gaps', 0)} gaps)",
            f"marker RMS per frame: mean {float(rms.mean()):.2f} mm, max {float(rms.max()):.2f} mm",
            f"joint angles vs truth: mean RMS {np.mean(ang):.2f} deg, worst {worst} {self.angle_rms_deg[worst]:.2f} deg",
            "segment scales (fitted / true): " + ", ".join(
                f"{b} {float(self.result.model.body_scales[self.subject.topology.body_index(b), 0]):.3f}/{v:.3f}"
                for b, v in SUBJECT_SCALES.items()),
            f"IK: {r.iterations} iterations, converged={r.converged}, {r.wall_time:.2f} s; demo total {self.wall_time:.2f} s",
        ]
        return "\n".join(lines)


def run_demo(out_dir: Optional[Path] = None, *, strides: float = 2.0, rate: float = 60.0,
             marker_set: str = "cmu", report: bool = True, progress: Optional[Callable[[str], None]] = None,
             dtype: torch.dtype = torch.float64, device=None) -> DemoResult:
    """The whole demo: built-in model, synthetic subject and walk, scale + IK, outputs.

    Two trials of the same subject share the fitted parameters: a short range-of-motion
    calibration trial (what a lab records for functional joint centres; walking alone hardly
    moves the hips out of the sagittal plane) and the walk. Fits segment scales, marker
    offsets and poses in one solve. Writes into ``out_dir`` (if given) ``walk_ik.mot``,
    ``model_fitted.json``, ``summary.txt`` and, with matplotlib, ``report.png``/``report.html``.
    """
    from . import io
    from .ik import solve
    from .ik.synthetic import rom_motion
    from .models import lower_body

    say = progress or (lambda s: None)
    t0 = _time.perf_counter()
    model = lower_body(marker_set, dtype=torch.float64)
    subject = demo_subject(model)
    q_true = normative_gait(model, strides=strides, rate=rate)
    walk = demo_trial(subject, q_true, rate=rate, seed=1)
    cal = demo_trial(subject, rom_motion(model, int(1.5 * rate), rate=rate), rate=rate, seed=2, n_gaps=0,
                     source="builtin:calibration")
    say(f"generated {walk.n_frames}-frame walk + {cal.n_frames}-frame calibration trial, {walk.n_markers} markers")
    topo = model.topology
    mask = _offset_mask(model)
    axes = {n: tuple(bool(a) for a in mask[i]) for i, n in enumerate(topo.marker_names)}
    say("fitting segment scales, marker offsets and poses (batched Gauss-Newton)")
    res, _ = solve(model, [walk, cal], fit=("pose", "segment_scales", "marker_offsets"), smoothness=1.0,
                   scale_bodies=list(SUBJECT_SCALES), offset_axes=axes, scale_weight=1e-3, offset_weight=1e-2,
                   dtype=dtype, device=device)
    qf = res.q.detach().to("cpu", torch.float64)
    angle = {}
    for i, n in enumerate(topo.coordinate_names):
        if topo.coordinate_motion[i].value == "rotational":
            angle[n] = float((qf[:, i] - q_true[:, i]).pow(2).mean().sqrt()) / _D
    scale_err = {b: float(res.model.body_scales[topo.body_index(b), 0]) / v - 1 for b, v in SUBJECT_SCALES.items()}
    files: dict = {}
    dr = DemoResult(res, walk, q_true, subject, angle, scale_err, _time.perf_counter() - t0, files)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files["motion"] = out / "walk_ik.mot"
        io.write_mot(files["motion"], res)
        files["truth"] = out / "walk_truth.mot"
        io.write_mot(files["truth"], q=q_true, time=walk.time, model=model)
        files["model"] = io.save_model(res.model, out / "model_fitted.json")
        files["markers"] = out / "walk_markers.trc"
        io.write_trc(files["markers"], walk)
        if report:
            from .report import make_report

            say("writing report")
            made = make_report(res, out, trial=walk, reference=files["truth"], reference_label="truth")
            if made:
                files.update(made)
        dr = dataclasses.replace(dr, wall_time=_time.perf_counter() - t0)
        files["summary"] = out / "summary.txt"
        files["summary"].write_text(dr.summary() + "\n")
    return dr
