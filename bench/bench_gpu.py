"""kinfunc on a CUDA GPU: the Triton chain kernel, FK throughput and batched IK, one run.

Usage::

    python bench/bench_gpu.py [--out bench/results/gpu.json] [--quick]

Cases (float32 unless named):

* chain composition of the 18-body lower body, ``N`` frames: the Triton kernel
  (``kinfunc::compose_chain``) against its torch twin, forward and forward + backward;
* FK: ``kf.marker_positions`` eager (which dispatches to the kernel) and ``kf.compile_fk``;
* IK: OpenSim's Gait2392 and Gait10dof trials (shared data) solved on the GPU, one trial and a
  batch of copies in one call (frames per second), float32 and float64; and a batch of
  synthetic walking trials of the built-in model.

Timings are medians after warm-up, with ``torch.cuda.synchronize()`` around each call. Writes
JSON. Needs a CUDA device; the OpenSim cases need the shared data (``KINFUNC_SHARED_DATA``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import kinfunc as kf
from kinfunc.fk import local_transforms
from kinfunc.kernels import compose_chain_reference
from kinfunc.kernels import triton_chain as tc

DATA = Path(os.environ.get("KINFUNC_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
CASES = {
    "gait2392": ("opensim-gait2392", "subject01_simbody.osim", "subject01_Setup_IK.xml", "subject01_walk1.trc"),
    "gait10dof": ("opensim-gait10dof", "subject01.osim", "walk_Setup_IK.xml", "subject01_walk.trc"),
}


def timed(fn, repeats=10, warm=2):
    """Median seconds per call, synchronised."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def chain_cases(sizes):
    model = kf.models.lower_body("cmu", dtype=torch.float32).to(device="cuda")
    parents = list(model.topology.parents)
    out = []
    for n in sizes:
        g = torch.Generator(device="cuda").manual_seed(0)
        q = model.default_q() + 0.5 * torch.randn(n, model.topology.n_coordinates, generator=g, device="cuda")
        R, t = local_transforms(model, q)
        R, t = R.contiguous(), t.contiguous()
        err = max(float((a - b).abs().max()) for a, b in zip(tc.compose_chain_op(parents, R, t), compose_chain_reference(parents, R, t)))

        def fwd_bwd(op):
            Rl, tl = R.detach().requires_grad_(), t.detach().requires_grad_()
            Rw, tw = op(Rl, tl)
            (Rw.sum() + tw.sum()).backward()

        row = {
            "frames": n,
            "max_abs_diff_vs_twin": err,
            "triton_fwd_s": timed(lambda: tc.compose_chain_op(parents, R, t)),
            "twin_fwd_s": timed(lambda: compose_chain_reference(parents, R, t)),
            "triton_fwd_bwd_s": timed(lambda: fwd_bwd(lambda a, b: tc.compose_chain_op(parents, a, b))),
            "twin_fwd_bwd_s": timed(lambda: fwd_bwd(lambda a, b: compose_chain_reference(parents, a, b))),
        }
        row["speedup_fwd"] = row["twin_fwd_s"] / row["triton_fwd_s"]
        row["speedup_fwd_bwd"] = row["twin_fwd_bwd_s"] / row["triton_fwd_bwd_s"]
        out.append(row)
        print(f"chain {n:>8d} frames: triton {row['triton_fwd_s'] * 1e3:.3f} ms vs twin {row['twin_fwd_s'] * 1e3:.3f} ms "
              f"({row['speedup_fwd']:.1f}x); fwd+bwd {row['speedup_fwd_bwd']:.1f}x; max diff {err:.1e}", flush=True)
    return out


def fk_cases(sizes):
    model = kf.models.lower_body("cmu", dtype=torch.float32).to(device="cuda")
    out = []
    t0 = time.perf_counter()
    fast = kf.compile_fk(model)
    q0 = model.default_q().expand(1024, -1).contiguous()
    fast.markers(q0)
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    for n in sizes:
        g = torch.Generator(device="cuda").manual_seed(1)
        q = model.default_q() + 0.5 * torch.randn(n, model.topology.n_coordinates, generator=g, device="cuda")
        eager = timed(lambda: kf.marker_positions(model, q))
        comp = timed(lambda: fast.markers(q))
        out.append({"frames": n, "eager_s": eager, "compiled_s": comp, "eager_frames_per_s": n / eager,
                    "compiled_frames_per_s": n / comp, "compile_s": compile_s})
        print(f"fk {n:>8d} frames: eager {n / eager / 1e6:.1f} M frames/s, compiled {n / comp / 1e6:.1f} M frames/s "
              f"(compile {compile_s:.1f} s)", flush=True)
    return out


def ik_opensim(batch_sizes):
    from kinfunc.io import load_ik_setup, load_osim, load_trc

    out = {}
    for name, (folder, model_file, setup_file, trc) in CASES.items():
        folder = DATA / folder
        if not folder.exists():
            print(f"{name}: shared data not found at {folder}, skipped", flush=True)
            continue
        setup = load_ik_setup(folder / setup_file)
        trial = load_trc(folder / trc)
        out[name] = {}
        for dname in ("float32", "float64"):
            dtype = getattr(torch, dname)
            model = load_osim(folder / model_file, dtype=dtype)
            rows = []
            for k in batch_sizes:
                trials = [trial] * k
                res = kf.ik.solve(model, trials, setup=setup, dtype=dtype, device="cuda")
                frames = sum(int(r.q.shape[0]) for r in res)
                s = timed(lambda: kf.ik.solve(model, trials, setup=setup, dtype=dtype, device="cuda"), repeats=5, warm=2)
                rows.append({"trials": k, "frames": frames, "wall_s": s, "frames_per_s": frames / s,
                             "iterations": res[0].iterations, "objective_first_trial": res[0].objective})
                print(f"ik {name} {dname} x{k}: {s * 1e3:.1f} ms, {frames / s:,.0f} frames/s, {res[0].iterations} it, "
                      f"objective {res[0].objective:.7f}", flush=True)
            out[name][dname] = rows
    return out


def ik_synthetic(n_trials, frames):
    from kinfunc.ik.synthetic import gait_motion, synthetic_trial

    model = kf.models.lower_body("opensim", dtype=torch.float32)
    trials = [synthetic_trial(model, gait_motion(model, frames, heading=0.1 * k), noise=0.004, gaps=0.1, seed=k)
              for k in range(n_trials)]
    res = kf.ik.solve(model, trials, dtype=torch.float32, device="cuda")
    s = timed(lambda: kf.ik.solve(model, trials, dtype=torch.float32, device="cuda"), repeats=3, warm=2)
    total = n_trials * frames
    rms = float(torch.stack([r.marker_rms.nanmean() for r in res]).mean())
    print(f"ik synthetic {n_trials} trials x {frames} frames: {s:.2f} s, {total / s:,.0f} frames/s, "
          f"{res[0].iterations} it, mean marker RMS {rms * 1e3:.2f} mm", flush=True)
    return {"trials": n_trials, "frames_per_trial": frames, "wall_s": s, "frames_per_s": total / s,
            "iterations": res[0].iterations, "mean_marker_rms_m": rms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "gpu.json"))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device")
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    results = {
        "machine": {"platform": platform.platform(), "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "triton": getattr(__import__("triton"), "__version__", None) if tc.triton_available() else None},
        "chain": chain_cases(sizes),
        "fk": fk_cases(sizes),
        "ik_opensim": ik_opensim([1, 16] if args.quick else [1, 16, 128, 1024]),
        "ik_synthetic": ik_synthetic(64 if args.quick else 512, 150),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
