"""The subject's standing height as a prior on the scales (``height=`` of kf.ik.solve and
kf.ik.scale_subject, ``--height`` of ``kinfunc ik``) and kf.ik.model_height."""

from __future__ import annotations

import json
import math

import pytest
import torch

import kinfunc as kf
from kinfunc.ik import IKError, model_height
from kinfunc.ik.synthetic import nongait_motion, synthetic_trial

from .shared import data

f64 = torch.float64
SEEN = [f"{j}_{s}" for j in ("hip_flexion", "hip_adduction", "knee_angle", "arm_flex", "arm_add", "elbow_flex")
        for s in "rl"] + ["lumbar_extension", "lumbar_bending"]


def _subject(model, overall=0.9, spread=0.05, seed=0):
    """``model`` scaled by ``overall`` with every segment (left = right) off by up to ``spread``."""
    g = torch.Generator().manual_seed(seed)
    var = 1 + spread * (2 * torch.rand(model.body_scales.shape[0], 1, generator=g, dtype=f64) - 1)
    names = model.body_names
    for i, b in enumerate(names):
        if b.endswith("_l"):
            var[i] = var[names.index(b[:-2] + "_r")]
    return model.replace(body_scales=model.body_scales * overall * var)


def _keypoint_trial(model, subject, kind="squat", T=16, seed=1):
    """The subject's keypoints in a short motion: 1 cm noise, scores in [0.3, 1], 10 % dropped."""
    free = kf.models.full_body(model.topology.name.split("_", 2)[2], dtype=f64, clamped=False)
    q = nongait_motion(free, kind, n_frames=T).clone()
    for s in "rl":  # nongait_motion bends knees positive (Rajagopal); the full body negative (Gait2392)
        q[:, model.coordinate_names.index(f"knee_angle_{s}")] *= -1
    lo, hi = model.coordinate_limits()
    q = torch.maximum(torch.minimum(q, hi), lo)
    tr = synthetic_trial(subject, q, noise=0.01, seed=seed)
    g = torch.Generator().manual_seed(100 + seed)
    conf = 0.3 + 0.7 * torch.rand(tr.xyz.shape[:2], generator=g, dtype=f64)
    conf[torch.rand(conf.shape, generator=g, dtype=f64) < 0.1] = 0.0
    xyz = torch.where((conf > 0)[..., None], tr.xyz, torch.full_like(tr.xyz, math.nan))
    return kf.MarkerTrial(tr.names, xyz, tr.rate, tr.time, confidence=conf), q


def _angle_error(model, res, q) -> float:
    idx = [model.coordinate_names.index(n) for n in SEEN]
    d = torch.remainder(res.q[:, idx] - q[:, idx] + math.pi, 2 * math.pi) - math.pi
    return float(d.square().mean(0).sqrt().mean()) * 180 / math.pi


# ------------------------------------------------------------------------------ model_height
def test_model_height_full_body_is_floor_to_head_top_and_scales_with_the_model():
    m = kf.models.full_body("coco17", dtype=f64)
    h = model_height(m)
    # the head_top landmark (a Head keypoint of halpe26) minus the lowest body origin, at the default pose
    h26 = kf.models.full_body("halpe26", dtype=f64)
    top = kf.marker_positions(h26, h26.default_q())[h26.marker_names.index("Head"), 1]
    floor = kf.fk(m, m.default_q()).t[:, 1].min()
    assert h == pytest.approx(float(top - floor), abs=1e-9)
    assert 1.6 < h < 1.8
    assert model_height(kf.models.full_body("cmu", dtype=f64)) == pytest.approx(h)  # markers do not count
    assert model_height(m.replace(body_scales=m.body_scales * 0.9)) == pytest.approx(0.9 * h, rel=1e-12)
    assert model_height(m.replace(global_scale=torch.tensor(1.1, dtype=f64))) == pytest.approx(1.1 * h, rel=1e-12)
    legs = m.body_scales.clone()
    legs[[m.body_names.index(b) for b in ("tibia_r", "tibia_l")]] *= 1.1  # longer shanks: taller
    assert model_height(m.replace(body_scales=legs)) > h + 0.03
    # a model without a head: the full body's proportions from the shoulders (or hips) keep it consistent
    lower = kf.models.lower_body("cmu", dtype=f64)
    assert model_height(lower) == pytest.approx(h, abs=0.01)


@pytest.mark.parametrize("subject", ["subject01", "subject02"])
def test_model_height_of_opensim_models_matches_the_subjects_measured_height(subject):
    folder = data("arnold2013synthetic")
    generic = kf.io.load_osim(folder / "unscaled_generic.osim", dtype=f64)
    assert 1.6 < model_height(generic) < 1.75  # Rajagopal's generic subject: 1.70 m
    scaled = kf.io.load_osim(folder / subject / f"{subject}.osim", dtype=f64)
    measured = json.loads((folder / subject / "_subject.json").read_text())["heightM"]
    assert model_height(scaled) == pytest.approx(measured, rel=0.015)


# ------------------------------------------------------------------------------ the prior
def test_height_prior_recovers_the_subjects_height_and_does_not_hurt_the_angles():
    model = kf.models.full_body("coco17", dtype=f64)
    subject = _subject(model)
    H = model_height(subject)
    assert H == pytest.approx(0.9 * model_height(model), rel=0.03)
    tr, q = _keypoint_trial(model, subject)
    without = kf.ik.solve(model, tr, fit=("pose", "segment_scales"), symmetric=True)
    with_h = kf.ik.solve(model, tr, fit=("pose", "segment_scales"), symmetric=True, height=H)
    err_without = abs(model_height(without.model) - H)
    err_with = abs(model_height(with_h.model) - H)
    assert err_with < 0.01, f"fitted height off by {1e3 * err_with:.1f} mm with the prior"
    assert err_without > 0.02  # 17 keypoints say little about feet and head: the generic size leaks in
    a_without, a_with = _angle_error(model, without, q), _angle_error(model, with_h, q)
    assert a_with <= a_without + 0.25, (a_with, a_without)
    scale_err = lambda r: float((r.model.body_scales.mean(-1) / subject.body_scales.mean(-1) - 1).abs().mean())  # noqa: E731
    assert scale_err(with_h) < 0.03 < scale_err(without)


def test_height_prior_targets_the_global_scale_when_it_is_fitted():
    from kinfunc.ik.solve import build_problem

    model = kf.models.full_body("coco17", dtype=f64)
    tr, _ = _keypoint_trial(model, _subject(model, spread=0.0), T=4)
    H0 = model_height(model)
    p, _ = build_problem(model, [tr], ("pose", "global_scale", "segment_scales"), height=0.8 * H0)
    assert p.theta_names[0] == "global_scale"
    assert float(p.prior_target[0]) == pytest.approx(0.8)
    assert torch.allclose(p.prior_target[1:], torch.ones_like(p.prior_target[1:]))  # generic proportions
    p, info = build_problem(model, [tr], ("pose", "segment_scales"), height=0.8 * H0, scale_weight=0.5)
    assert torch.allclose(p.prior_target, torch.full_like(p.prior_target, 0.8))
    assert torch.allclose(info.theta0[0], p.prior_target)  # the fit starts at the subject's size
    assert torch.allclose(p.prior_sqrt_w, torch.full_like(p.prior_sqrt_w, math.sqrt(0.5)))  # the usual weights
    p, _ = build_problem(model, [tr], ("pose", "segment_scales"))
    assert torch.allclose(p.prior_target, torch.ones_like(p.prior_target))  # no height: the model's scales


@pytest.mark.parametrize("bad, words", [
    (1620, "height is in metres; this looks like millimetres (give e.g. 1.62)"),
    (162, "height is in metres; this looks like centimetres (give e.g. 1.62)"),
    (0.0, "positive number in metres"),
    (-1.7, "positive number in metres"),
    (float("nan"), "positive number in metres"),
    (0.1, "at least 0.3 m"),
    ("tall", "as a number in metres"),
])
def test_height_in_the_wrong_units_or_nonsense_is_refused(bad, words):
    model = kf.models.full_body("coco17", dtype=f64)
    tr, _ = _keypoint_trial(model, model, T=3)
    with pytest.raises(IKError, match=r"height") as e:
        kf.ik.solve(model, tr, fit=("pose", "segment_scales"), height=bad)
    assert words in str(e.value)
    assert repr(bad) in str(e.value) or f"{bad:g}" in str(e.value)


def test_height_needs_a_scale_group_and_excludes_scale_target():
    model = kf.models.full_body("coco17", dtype=f64)
    tr, _ = _keypoint_trial(model, model, T=3)
    with pytest.raises(IKError, match="fit 'segment_scales' or 'global_scale'"):
        kf.ik.solve(model, tr, fit=("pose",), height=1.62)
    with pytest.raises(IKError, match="not both"):
        kf.ik.solve(model, tr, fit=("pose", "segment_scales"), height=1.62, scale_target=0.9)
    with pytest.raises(IKError, match="prior='generic'"):
        kf.ik.scale_subject(model, tr, height=1.62, prior="overall")


def test_scale_subject_with_height():
    model = kf.models.full_body("cmu", dtype=f64)
    subject = _subject(model, overall=0.92)
    H = model_height(subject)
    tr, _ = _keypoint_trial(model, subject, kind="squat", T=12)
    fit = kf.ik.scale_subject(model, tr, height=H, shape_frames=12)
    assert abs(model_height(fit.model) - H) < 0.01
