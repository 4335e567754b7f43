"""3-D keypoints with confidences: the file layouts (kinfunc.io.load_keypoints) and the
markerless path end to end (keypoints in, .mot and report out)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import kinfunc as kf
from kinfunc.ik.synthetic import nongait_motion, synthetic_trial
from kinfunc.trial import DataFileError

f64 = torch.float64


def _coco_squat(T=60, seed=0):
    model = kf.models.full_body("coco17", dtype=f64)
    free = kf.models.full_body("coco17", dtype=f64, clamped=False)
    q = nongait_motion(free, "squat", n_frames=T).clone()
    for s in "rl":  # nongait_motion bends knees positive (Rajagopal); the full body negative (Gait2392)
        i = model.coordinate_names.index(f"knee_angle_{s}")
        q[:, i] = -q[:, i]
    lo, hi = model.coordinate_limits()
    q = torch.maximum(torch.minimum(q, hi), lo)
    tr = synthetic_trial(model, q, noise=0.01, seed=seed)
    g = torch.Generator().manual_seed(seed)
    conf = 0.3 + 0.7 * torch.rand(tr.xyz.shape[:2], generator=g, dtype=f64)
    conf[torch.rand(conf.shape, generator=g, dtype=f64) < 0.1] = 0.0  # dropouts
    return model, q, tr, conf


def test_npy_npz_and_json_layouts_read_the_same(tmp_path):
    model, q, tr, conf = _coco_squat(T=8)
    x = tr.xyz.numpy()
    arr4 = np.concatenate((x * 1000, conf.numpy()[..., None]), -1)  # mm + confidence
    np.save(tmp_path / "k.npy", arr4)
    np.savez(tmp_path / "k.npz", keypoints=x, confidence=conf.numpy(), names=np.array(model.marker_names), rate=100.0)
    frames = [[[None if c == 0 else float(v) for v in p[:3]] + [float(c)] for p, c in zip(f, cf)] for f, cf in zip(x, conf.numpy())]
    (tmp_path / "k.json").write_text(json.dumps({"keypoint_set": "coco17", "rate": 100, "units": "m", "frames": frames}))
    a = kf.io.load_keypoints(tmp_path / "k.npy", keypoint_set="coco17", rate=100, units="mm")
    b = kf.io.load_keypoints(tmp_path / "k.npz")
    c = kf.io.load_markers(tmp_path / "k.json")
    for t in (a, b, c):
        assert t.names == model.marker_names and t.rate == 100.0
        torch.testing.assert_close(t.confidence, conf)
        gone = conf == 0
        assert bool(torch.isnan(t.xyz[gone]).all())
        torch.testing.assert_close(t.xyz[~gone], tr.xyz[~gone], rtol=0, atol=1e-9)


def test_bad_keypoint_files_name_the_fix(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 17, 3)))
    with pytest.raises(DataFileError, match="keypoint_set="):
        kf.io.load_keypoints(tmp_path / "a.npy", rate=30)
    with pytest.raises(DataFileError, match="no sampling rate"):
        kf.io.load_keypoints(tmp_path / "a.npy", keypoint_set="coco17")
    with pytest.raises(DataFileError, match="17 keypoints per frame but 25 names"):
        kf.io.load_keypoints(tmp_path / "a.npy", keypoint_set="body25", rate=30)
    with pytest.raises(DataFileError, match="unknown keypoint_set"):
        kf.io.load_keypoints(tmp_path / "a.npy", keypoint_set="coco18", rate=30)
    np.save(tmp_path / "b.npy", np.concatenate((np.zeros((4, 17, 3)), 5 * np.ones((4, 17, 1))), -1))
    with pytest.raises(DataFileError, match=r"outside \[0, 1\]"):
        kf.io.load_keypoints(tmp_path / "b.npy", keypoint_set="coco17", rate=30)


def test_markerless_end_to_end_keypoints_in_mot_and_report_out(tmp_path):
    """COCO-17 keypoints of a deep squat with 1 cm noise, random scores and 10 % dropouts,
    through the CLI with the built-in full body: a .mot within a few degrees of the truth."""
    from kinfunc.cli import main

    model, q, tr, conf = _coco_squat(T=80, seed=2)
    x = torch.where((conf > 0)[..., None], tr.xyz, torch.full_like(tr.xyz, math.nan))
    np.savez(tmp_path / "squat.npz", keypoints=x.numpy(), confidence=conf.numpy(), names=np.array(model.marker_names),
             rate=100.0)
    out = tmp_path / "out"
    rc = main(["ik", str(tmp_path / "squat.npz"), "--model", "builtin:full_body:coco17", "--smoothness", "1",
               "--out", str(out), "--no-report"])
    assert rc == 0
    got = kf.io.read_mot(out / "squat_ik.mot", model=model).q_for(model)
    seen = [model.coordinate_names.index(f"{j}_{s}") for j in ("hip_flexion", "knee_angle", "elbow_flex") for s in "rl"]
    d = torch.remainder(got[:, seen] - q[:, seen] + math.pi, 2 * math.pi) - math.pi
    assert float(d.square().mean(0).sqrt().mean()) < 5 * math.pi / 180


def test_smpl_joints_to_anatomical_coordinates():
    """24 SMPL-style joint positions of a squat by a subject 8 % off the model per segment,
    1 cm noise: segment scales and poses in one call; observable angles within 4.5 deg RMS
    on average, every frame fitted."""
    model = kf.models.full_body("smpl24", dtype=f64)
    free = kf.models.full_body("smpl24", dtype=f64, clamped=False)
    names = model.coordinate_names
    q = nongait_motion(free, "squat", n_frames=80).clone()
    for s in "rl":
        q[:, names.index(f"knee_angle_{s}")] *= -1
    lo, hi = model.coordinate_limits()
    q = torch.maximum(torch.minimum(q, hi), lo)
    g = torch.Generator().manual_seed(0)
    subject = model.replace(body_scales=model.body_scales * (1 + 0.08 * (2 * torch.rand(model.body_scales.shape[0], 1, generator=g, dtype=f64) - 1)))
    joints = synthetic_trial(subject, q, noise=0.01, seed=1).xyz
    res = kf.ik.smpl_to_anatomical(joints, rate=100.0)
    seen = [names.index(f"{j}_{s}") for j in ("hip_flexion", "hip_adduction", "knee_angle", "arm_flex", "arm_add", "elbow_flex")
            for s in "rl"]
    d = torch.remainder(res.q[:, seen] - q[:, seen] + math.pi, 2 * math.pi) - math.pi
    assert float(d.square().mean(0).sqrt().mean()) < 4.5 * math.pi / 180
    assert float(res.marker_rms.max()) < 0.035
    with pytest.raises(kf.ik.IKError, match="SMPL's joint order"):
        kf.ik.smpl_to_anatomical(joints[:, :17])
