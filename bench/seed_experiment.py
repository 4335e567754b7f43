"""The seed paper's experiment on a Plug-in-Gait walk: whole-trial IK fitting pose, global scale,
segment scales and marker offsets together with the built-in 18-DOF lower-body model.

Usage::

    python bench/seed_experiment.py [--threads 1] [--out-dir bench/results]

Trial ``c3d/btk/PiG_Motion3_FF.c3d`` from the shared data, reoriented to the model frame with
``trial.suggest_orientation()`` (printed); model ``kf.models.lower_body("pig", float64)``.
Reports mean/max marker RMS, iterations, wall time, fitted scales, the range of every joint
angle against the model's limits, and gait-curve landmarks (peak knee flexion, hip range);
writes ``seed_experiment.json`` and ``seed_experiment.png`` (joint-angle curves via
``kinfunc.report.make_report``) under ``--out-dir``. The seed paper reported 7.4 mm mean
marker RMS on CMU walking (9.1 mm for a MATLAB toolbox).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch

import kinfunc as kf
from kinfunc.model import Motion

DATA = Path(os.environ.get("KINFUNC_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
FIT = ("pose", "global_scale", "segment_scales", "marker_offsets")


def run(threads=1):
    """Fit and summarise; returns ``(summary dict, result, trial)``."""
    torch.set_num_threads(threads)
    path = DATA / "c3d" / "btk" / "PiG_Motion3_FF.c3d"
    walk = kf.io.load_c3d(path)
    guess = walk.suggest_orientation()
    walk = walk.reoriented(up=guess["up"], forward=guess["forward"])
    model = kf.models.lower_body("pig", dtype=torch.float64)
    t0 = time.perf_counter()
    res = kf.ik.solve(model, walk, fit=FIT)
    wall = time.perf_counter() - t0
    topo = model.topology
    q = res.q
    angles = {}
    inside = True
    for c, name in enumerate(topo.coordinate_names):
        if topo.coordinate_motion[c] is not Motion.ROTATIONAL or name.startswith("pelvis"):
            continue
        lo, hi = topo.coordinate_ranges[c]
        qmin, qmax = float(q[:, c].min()), float(q[:, c].max())
        ok = lo - 1e-6 <= qmin and qmax <= hi + 1e-6
        inside &= ok
        angles[name] = {"min_deg": math.degrees(qmin), "max_deg": math.degrees(qmax),
                        "limits_deg": [math.degrees(lo), math.degrees(hi)], "inside": ok}
    fitted = res.model
    summary = {
        "trial": str(path.relative_to(DATA)),
        "frames": int(q.shape[0]),
        "markers": len(res.marker_names),
        "orientation": {"up": guess["up"], "forward": guess["forward"], "reason": getattr(guess, "reason", None)},
        "fit": list(FIT),
        "solver": res.solver,
        "iterations": res.iterations,
        "wall_s": wall,
        "torch_threads": torch.get_num_threads(),
        "mean_marker_rms_mm": 1e3 * float(res.marker_rms.nanmean()),
        "median_marker_rms_mm": 1e3 * float(res.marker_rms.nanmedian()),
        "max_marker_error_mm": 1e3 * float(res.marker_max.nanmax() if hasattr(res.marker_max, "nanmax") else res.marker_max[~res.marker_max.isnan()].max()),
        "per_marker_rms_mm": {n: 1e3 * float(v) for n, v in zip(res.marker_names, res.marker_rms_per_marker)},
        "global_scale": float(fitted.global_scale),
        "segment_scales": {b: float(fitted.body_scales[i].mean()) for i, b in enumerate(topo.body_names)},
        "angles": angles,
        "all_angles_inside_limits": bool(inside),
        # Gait2392 convention: knee_angle is negative in flexion
        "knee_flexion_peak_deg": {s: -angles[f"knee_angle_{s}"]["min_deg"] for s in "rl"},
        "hip_flexion_range_deg": {s: [angles[f"hip_flexion_{s}"]["min_deg"], angles[f"hip_flexion_{s}"]["max_deg"]] for s in "rl"},
        "seed_paper_mean_rms_mm": {"seed (CMU walking)": 7.4, "MATLAB toolbox (CMU walking)": 9.1},
    }
    return summary, res, walk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"shared data not found at {DATA} (set KINFUNC_SHARED_DATA)")
    summary, res, walk = run(threads=args.threads)
    o = summary["orientation"]
    print(f"orientation: up={o['up']} forward={o['forward']} ({o['reason']})")
    print(f"{summary['frames']} frames, {summary['markers']} markers: mean marker RMS {summary['mean_marker_rms_mm']:.2f} mm "
          f"(max {summary['max_marker_error_mm']:.1f} mm), {summary['iterations']} iterations, {summary['wall_s']:.2f} s")
    print(f"knee flexion peak r/l {summary['knee_flexion_peak_deg']['r']:.1f}/{summary['knee_flexion_peak_deg']['l']:.1f} deg; "
          f"all angles inside limits: {summary['all_angles_inside_limits']}")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seed_experiment.json").write_text(json.dumps(summary, indent=2) + "\n")
    from kinfunc.report import make_report

    tmp = out / "_seed_report"
    paths = make_report(res, tmp, trial=walk, title="PiG_Motion3_FF: pose + scales + offsets")
    if paths:
        shutil.copy(paths["png"], out / "seed_experiment.png")
    shutil.rmtree(tmp, ignore_errors=True)
    print("wrote", out / "seed_experiment.json", out / "seed_experiment.png")


if __name__ == "__main__":
    main()
