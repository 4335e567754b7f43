"""Wall time of whole-trial IK: batched Gauss-Newton vs L-BFGS on a synthetic trial.

Usage::

    python bench/bench_ik_synthetic.py [--frames 150] [--repeats 3] [--threads 2] [--out results.json]

The trial: the built-in lower-body model (18 DOF) with a gait-like motion, 5 mm Gaussian
noise per axis and 20 % random gaps. Cases: pose only (CMU and Gait2392-style marker sets),
pose + temporal smoothness, pose + segment scales + marker offsets. Times are medians over
``--repeats`` warm runs of GN and ``--lbfgs-repeats`` of L-BFGS (after a short untimed
warm-up), float64 on CPU. Prints JSON (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import torch

import kinfunc as kf
from kinfunc.ik.synthetic import gait_motion, perturbed_model, synthetic_trial


def _case(name, marker_set, frames, fit, options, repeats, solvers, lbfgs_repeats=1):
    model = kf.models.lower_body(marker_set, dtype=torch.float64)
    truth = perturbed_model(
        model,
        {"femur_r": 0.96, "femur_l": 0.96, "tibia_r": 1.04, "tibia_l": 1.04},
        offset_sigma=0.005 if "marker_offsets" in fit else 0.0,
        seed=3,
    )
    q = gait_motion(model, frames)
    trial = synthetic_trial(truth, q, noise=0.005, gaps=0.2, seed=1)
    out = {
        "case": name,
        "marker_set": marker_set,
        "frames": frames,
        "markers": len(model.marker_names),
        "fit": list(fit),
        "options": options,
        "solvers": {},
    }
    for solver in solvers:
        kf.ik.solve(model, trial, fit=fit, solver=solver, max_iter=3, **options)  # warm-up (code paths)
        times, res = [], None
        for _ in range(repeats if solver == "gn" else lbfgs_repeats):
            t0 = time.perf_counter()
            res = kf.ik.solve(model, trial, fit=fit, solver=solver, **options)
            times.append(time.perf_counter() - t0)
        err = (res.q - q)[:, 6:]
        out["solvers"][solver] = {
            "wall_s_median": statistics.median(times),
            "wall_s_all": times,
            "ms_per_frame": 1e3 * statistics.median(times) / frames,
            "iterations": res.iterations,
            "converged": res.converged,
            "objective": res.objective,
            "mean_marker_rms_mm": 1e3 * float(res.marker_rms.nanmean()),
            "joint_angle_rms_error_deg": float(err.pow(2).mean().sqrt()) * 180 / math.pi,
        }
    if len(solvers) == 2:
        a, b = (out["solvers"][s] for s in solvers)
        out["speedup_gn_over_lbfgs"] = b["wall_s_median"] / a["wall_s_median"]
        out["objective_rel_diff"] = abs(a["objective"] - b["objective"]) / a["objective"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of Gauss-Newton")
    ap.add_argument("--lbfgs-repeats", type=int, default=1, help="timed runs of L-BFGS (slow)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-lbfgs", action="store_true", help="time only Gauss-Newton")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    solvers = ("gn",) if args.skip_lbfgs else ("gn", "lbfgs")
    cases = [
        ("pose_cmu", "cmu", ("pose",), {}),
        ("pose_opensim", "opensim", ("pose",), {}),
        ("pose_smooth_cmu", "cmu", ("pose",), {"smoothness": 1.0}),
        (
            "pose_scales_offsets_opensim",
            "opensim",
            ("pose", "segment_scales", "marker_offsets"),
            {"smoothness": 1.0, "scale_weight": 1e-3, "offset_weight": 1e-2},
        ),
    ]
    results = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "dtype": "float64",
        "cases": [
            _case(n, ms, args.frames, fit, opt, args.repeats, solvers, args.lbfgs_repeats) for n, ms, fit, opt in cases
        ],
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
