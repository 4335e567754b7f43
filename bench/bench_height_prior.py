"""The subject's standing height as a prior on the scales: fits with and without ``height=``.

    python bench/bench_height_prior.py [--frames 40] [--noise 0.01] [--sets coco17 cmu] [--kinds ...] [--out PATH]

Per marker/keypoint set (``kf.models.full_body(marker_set=...)``), subject and motion
(``kinfunc.ik.synthetic.nongait_motion``): a subject made from the generic model scaled by
``overall`` (0.9: about 1.52 m; 1.06: about 1.79 m) with every segment (left = right) off by up
to 5 %, its points with Gaussian noise (m per axis), scores in [0.3, 1] as confidences and 10 %
of samples dropped; ``kf.ik.solve(model, trial, fit=("pose", "segment_scales"), symmetric=True)``
without and with ``height=`` the subject's true standing height (:func:`kf.ik.model_height`).
Reported: the fitted model's height error (mm), the mean / max segment-scale error (%) over the
bodies, the RMS error of the angles the points can see (as bench/bench_full_body.py; mean over
them), the mean point RMS (mm) and the solve time (1 torch thread). Then
``model_height`` of the arnold2013synthetic OpenSim models against the subjects' measured
heights (when the shared data is there). Writes ``bench/results/height_prior.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

import kinfunc as kf
from kinfunc.ik import model_height
from kinfunc.ik.synthetic import NONGAIT_KINDS, nongait_motion, synthetic_trial

SEEN = [f"{j}_{s}" for j in ("hip_flexion", "hip_adduction", "knee_angle", "arm_flex", "arm_add", "elbow_flex")
        for s in "rl"] + ["lumbar_extension", "lumbar_bending"]
OUT = Path(__file__).resolve().parent / "results" / "height_prior.json"
SHARED = Path(os.environ.get("KINFUNC_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
f64 = torch.float64


def motion(model, free, kind, n):
    """The synthetic motion in this model's signs (knee flexion negative) and ranges."""
    q = nongait_motion(free, kind, n_frames=n).clone()
    for s in "rl":
        q[:, model.coordinate_names.index(f"knee_angle_{s}")] *= -1
    lo, hi = model.coordinate_limits()
    return torch.maximum(torch.minimum(q, hi), lo)


def subject_model(model, overall, seed, spread=0.05):
    g = torch.Generator().manual_seed(seed)
    var = 1 + spread * (2 * torch.rand(model.body_scales.shape[0], 1, generator=g, dtype=f64) - 1)
    names = model.body_names
    for i, b in enumerate(names):
        if b.endswith("_l"):
            var[i] = var[names.index(b[:-2] + "_r")]
    return model.replace(body_scales=model.body_scales * overall * var)


def keypoints(subject, q, noise, seed):
    tr = synthetic_trial(subject, q, noise=noise, seed=seed)
    g = torch.Generator().manual_seed(100 + seed)
    conf = 0.3 + 0.7 * torch.rand(tr.xyz.shape[:2], generator=g, dtype=f64)
    conf[torch.rand(conf.shape, generator=g, dtype=f64) < 0.1] = 0.0
    xyz = torch.where((conf > 0)[..., None], tr.xyz, torch.full_like(tr.xyz, math.nan))
    return kf.MarkerTrial(tr.names, xyz, tr.rate, tr.time, confidence=conf)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--sets", nargs="+", default=["coco17", "cmu"])
    ap.add_argument("--kinds", nargs="+", default=["squat", "sit_to_stand", "jump", "turn360", "lying"],
                    choices=list(NONGAIT_KINDS))
    ap.add_argument("--overall", nargs="+", type=float, default=[0.9, 1.06])
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    torch.set_num_threads(1)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
    out = {"machine": {"platform": platform.platform(), "torch": torch.__version__, "commit": commit},
           "args": {k: v for k, v in vars(a).items() if k != "out"}, "runs": [], "summary": {}}
    for ks in a.sets:
        model = kf.models.full_body(ks, dtype=f64)
        free = kf.models.full_body(ks, dtype=f64, clamped=False)
        idx = [model.coordinate_names.index(n) for n in SEEN]
        for si, overall in enumerate(a.overall):
            subject = subject_model(model, overall, seed=si)
            H = model_height(subject)
            for kind in a.kinds:
                k = list(NONGAIT_KINDS).index(kind)
                q = motion(model, free, kind, a.frames)
                tr = keypoints(subject, q, a.noise, seed=k)
                row = {"set": ks, "overall": overall, "height_m": round(H, 4), "kind": kind}
                for label, h in (("without", None), ("with", H)):
                    t0 = time.perf_counter()
                    res = kf.ik.solve(model, tr, fit=("pose", "segment_scales"), symmetric=True, height=h)
                    dt = time.perf_counter() - t0
                    d = torch.remainder(res.q[:, idx] - q[:, idx] + math.pi, 2 * math.pi) - math.pi
                    ang = float(d.square().mean(0).sqrt().mean()) * 180 / math.pi
                    se = (res.model.body_scales.mean(-1) / subject.body_scales.mean(-1) - 1).abs()
                    row[label] = {"height_err_mm": round(1e3 * (model_height(res.model) - H), 2),
                                  "scale_err_mean_pct": round(100 * float(se.mean()), 2),
                                  "scale_err_max_pct": round(100 * float(se.max()), 2),
                                  "angles_mean_deg": round(ang, 3),
                                  "point_rms_mm": round(1e3 * float(res.marker_rms.nanmean()), 2),
                                  "solve_s": round(dt, 3)}
                out["runs"].append(row)
                w, wo = row["with"], row["without"]
                print(f"{ks:7s} x{overall:<5g} {kind:13s} height err {wo['height_err_mm']:+7.1f} -> {w['height_err_mm']:+6.1f} mm"
                      f"  scales {wo['scale_err_mean_pct']:5.2f} -> {w['scale_err_mean_pct']:5.2f} %"
                      f"  angles {wo['angles_mean_deg']:5.2f} -> {w['angles_mean_deg']:5.2f} deg", flush=True)
    for ks in a.sets:
        rows = [r for r in out["runs"] if r["set"] == ks]
        mean = lambda lab, key: round(sum(abs(r[lab][key]) for r in rows) / len(rows), 3)  # noqa: E731
        out["summary"][ks] = {lab: {key: mean(lab, key) for key in ("height_err_mm", "scale_err_mean_pct",
                                                                       "angles_mean_deg", "point_rms_mm")}
                              for lab in ("without", "with")}
        out["summary"][ks]["angles_better_or_equal"] = sum(
            r["with"]["angles_mean_deg"] <= r["without"]["angles_mean_deg"] + 0.05 for r in rows)
        out["summary"][ks]["runs"] = len(rows)
    print(json.dumps(out["summary"], indent=1))
    folder = SHARED / "arnold2013synthetic"
    if folder.exists():  # model_height of OpenSim models (Rajagopal 2015, no head body) against measured heights
        osim = {"generic": round(model_height(kf.io.load_osim(folder / "unscaled_generic.osim", dtype=f64)), 4)}
        for sub in sorted(p.name for p in folder.iterdir() if (p / f"{p.name}.osim").exists()):
            measured = json.loads((folder / sub / "_subject.json").read_text())["heightM"]
            h = model_height(kf.io.load_osim(folder / sub / f"{sub}.osim", dtype=f64))
            osim[sub] = {"model_height_m": round(h, 4), "measured_m": measured, "err_mm": round(1e3 * (h - measured), 1)}
        out["opensim_model_height"] = osim
        print("OpenSim model_height:", osim)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
