"""The full-body model on synthetic non-gait motions rendered to every marker/keypoint set.

    python bench/bench_full_body.py [--frames 120] [--noise 0.01] [--dropout 0.1] [--smoothness 1] [--sets ...] [--kinds ...] [--out PATH]

Per set (``kf.models.full_body(marker_set=...)``) and motion (``kinfunc.ik.synthetic``'s seven:
squat, sit-to-stand, jump, full turn, lying down, arms overhead, cartwheel): the true model's
points with Gaussian noise (m per axis), random scores in [0.3, 1] as confidences and a fraction
``dropout`` of samples missing (confidence 0); ``kf.ik.solve(model, trial, smoothness=1)`` from
the default start (``--smoothness``: another weight; it is per frame, so what suits depends on
the noise and on how far the motion moves per frame: 1 for keypoint-grade noise, 0.02 for
marker-grade noise, see below). Reported: mean / max keypoint RMS per frame, the RMS error of the angles the
points can see (hip flexion/adduction, knee, arm flexion/adduction, elbow, lumbar extension and
bending; per coordinate over frames, mean over them and the worst), the solve time (1 torch
thread) and full-body FK throughput; then ``kf.ik.smpl_to_anatomical`` on the smpl24 points
of a subject 8 % off the model per segment (scales fitted). Writes ``bench/results/full_body.json``
(``--out``: elsewhere, for a piece of the bench).

Marker-grade data (3 mm noise per axis instead of keypoint-grade 1 cm):
``python bench/bench_full_body.py --sets cmu pig --noise 0.003 --smoothness 0.02 --out
bench/results/full_body_markers_3mm.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

import kinfunc as kf
from kinfunc.ik.synthetic import NONGAIT_KINDS, nongait_motion, synthetic_trial

SEEN = [f"{j}_{s}" for j in ("hip_flexion", "hip_adduction", "knee_angle", "arm_flex", "arm_add", "elbow_flex")
        for s in "rl"] + ["lumbar_extension", "lumbar_bending"]
OUT = Path(__file__).resolve().parent / "results" / "full_body.json"


def motion(model, free, kind, n):
    """The synthetic motion in this model's signs (knee flexion negative) and ranges."""
    q = nongait_motion(free, kind, n_frames=n).clone()
    for s in "rl":
        q[:, model.coordinate_names.index(f"knee_angle_{s}")] *= -1
    lo, hi = model.coordinate_limits()
    return torch.maximum(torch.minimum(q, hi), lo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--smoothness", type=float, default=1.0)
    ap.add_argument("--sets", nargs="+", default=["cmu", "coco17", "halpe26", "body25", "h36m17", "smpl24", "opencap"])
    ap.add_argument("--kinds", nargs="+", default=list(NONGAIT_KINDS), choices=list(NONGAIT_KINDS))
    ap.add_argument("--out", type=Path, default=OUT, help="where to write the results (default bench/results/full_body.json)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    f64 = torch.float64
    args = {k: v for k, v in vars(a).items() if k != "out"}
    out = {"machine": {"platform": platform.platform(), "torch": torch.__version__}, "args": args, "sets": {}}
    rows = []
    for ks in a.sets:
        model = kf.models.full_body(ks, dtype=f64)
        free = kf.models.full_body(ks, dtype=f64, clamped=False)
        idx = [model.coordinate_names.index(n) for n in SEEN]
        res_set = {}
        for kind in a.kinds:
            k = list(NONGAIT_KINDS).index(kind)  # the seeds of a motion do not depend on which others run
            q = motion(model, free, kind, a.frames)
            tr = synthetic_trial(model, q, noise=a.noise, seed=k)
            g = torch.Generator().manual_seed(100 + k)
            conf = 0.3 + 0.7 * torch.rand(tr.xyz.shape[:2], generator=g, dtype=f64)
            conf[torch.rand(conf.shape, generator=g, dtype=f64) < a.dropout] = 0.0
            xyz = torch.where((conf > 0)[..., None], tr.xyz, torch.full_like(tr.xyz, math.nan))
            tr = tr.__class__(tr.names, xyz, tr.rate, tr.time, confidence=conf)
            t0 = time.perf_counter()
            res = kf.ik.solve(model, tr, smoothness=a.smoothness)
            dt = time.perf_counter() - t0
            d = torch.remainder(res.q[:, idx] - q[:, idx] + math.pi, 2 * math.pi) - math.pi
            per = d.square().mean(0).sqrt() * 180 / math.pi
            w = int(per.argmax())
            r = {"mean_rms_mm": 1e3 * float(res.marker_rms.nanmean()), "max_rms_mm": 1e3 * float(res.marker_rms.nan_to_num(0).max()),
                 "angles_mean_deg": float(per.mean()), "worst": SEEN[w], "worst_deg": float(per[w]), "solve_s": dt,
                 "per_angle_deg": {n: round(float(v), 3) for n, v in zip(SEEN, per)}}
            res_set[kind] = r
            rows.append((ks, kind, r))
            print(f"{ks:8s} {kind:14s} {r['mean_rms_mm']:5.1f} / {r['max_rms_mm']:5.1f} mm  angles {r['angles_mean_deg']:5.2f} deg "
                  f"(worst {r['worst']} {r['worst_deg']:.1f})  {dt:.2f} s", flush=True)
        # FK throughput of this model (eager fk, float32, 10k frames)
        m32 = model.to(dtype=torch.float32)
        qq = m32.default_q().expand(10_000, -1).contiguous()
        kf.fk(m32, qq)
        t0 = time.perf_counter()
        for _ in range(5):
            kf.fk(m32, qq)
        res_set["fk_eager_frames_per_s"] = 5 * 10_000 / (time.perf_counter() - t0)
        out["sets"][ks] = res_set
    if "smpl24" in a.sets:  # kf.ik.smpl_to_anatomical: a subject +-8 % per segment, scales fitted
        model = kf.models.full_body("smpl24", dtype=f64)
        free = kf.models.full_body("smpl24", dtype=f64, clamped=False)
        idx = [model.coordinate_names.index(n) for n in SEEN]
        g = torch.Generator().manual_seed(0)
        subject = model.replace(body_scales=model.body_scales * (1 + 0.08 * (2 * torch.rand(
            model.body_scales.shape[0], 1, generator=g, dtype=f64) - 1)))
        sm = {}
        for kind in a.kinds:
            k = list(NONGAIT_KINDS).index(kind)
            q = motion(model, free, kind, a.frames)
            joints = synthetic_trial(subject, q, noise=a.noise, seed=k).xyz
            t0 = time.perf_counter()
            res = kf.ik.smpl_to_anatomical(joints, rate=100.0)
            dt = time.perf_counter() - t0
            d = torch.remainder(res.q[:, idx] - q[:, idx] + math.pi, 2 * math.pi) - math.pi
            per = d.square().mean(0).sqrt() * 180 / math.pi
            sm[kind] = {"angles_mean_deg": float(per.mean()), "worst_deg": float(per.max()), "solve_s": dt,
                        "mean_rms_mm": 1e3 * float(res.marker_rms.nanmean())}
            print(f"smpl_to_anatomical {kind:14s} angles {per.mean():5.2f} deg (worst {per.max():.1f})  {dt:.2f} s", flush=True)
        out["smpl_to_anatomical"] = sm
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
