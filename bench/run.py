"""kinfunc FK benchmarks vs peers, one run, side by side.

``python -m bench [--quick] [--max-batch N] [--threads T]`` from the repository root. Writes
``bench/results/<utc-time>.json`` and ``bench/results/latest.md`` (copy the table into
``bench/RESULTS.md`` to publish it). Medians over repeats; peers that are not installed are
skipped and listed. Model: the 18-DOF lower body (``kf.models.lower_body("cmu")``), float32,
given to pytorch_kinematics and Pinocchio as the same URDF (``kf.io.save_urdf``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import kinfunc as kf

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("KINFUNC_SHARED_DATA", HERE.parents[1] / "shared" / "data"))


def timeit(fn, min_time=0.3, min_reps=3, max_reps=200):
    """Median seconds per call (after one warm call)."""
    fn()
    ts = []
    t_end = time.perf_counter() + min_time
    while len(ts) < min_reps or (time.perf_counter() < t_end and len(ts) < max_reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# ----------------------------------------------------------------------------------------
def machine_roofline(threads):
    n = 64 * 2**20  # 256 MB float32
    a = torch.empty(n)
    a.uniform_()
    b = torch.empty_like(a)
    t = timeit(lambda: b.copy_(a), min_time=0.5)
    bw = 2 * a.numel() * 4 / t  # read + write
    m = torch.randn(1024, 1024)
    tg = timeit(lambda: m @ m, min_time=0.5)
    gflops = 2 * 1024**3 / tg
    x = torch.randn(8 * 2**20)
    ts = timeit(lambda: torch.sin(x), min_time=0.3)
    sin_rate = x.numel() / ts
    return {"threads": threads, "copy_GBps": bw / 1e9, "sgemm_GFLOPs": gflops / 1e9, "sin_per_s": sin_rate}


def fk_cost(model):
    """Bytes, arithmetic and sin/cos per frame of poses-only FK (in: q, out: R and t of every body).

    Counted on the generated single-frame code, which is the same folded row algebra the
    compiled kernel runs: every binary/unary float operation and every sin/cos call.
    """
    import dis

    from kinfunc.compiled import _frozen_consts, _lean_function, _plan

    B, C = model.topology.n_bodies, model.topology.n_coordinates
    f = _lean_function(_plan(model.topology), _frozen_consts(model), False)
    ins = list(dis.get_instructions(f))
    flop = sum(1 for i in ins if i.opname.startswith(("BINARY_OP", "UNARY_NEGATIVE")))
    trig = sum(1 for i in ins if i.opname == "CALL")
    return {"bytes": 4 * C + 4 * B * 12, "flop": flop, "trig": trig}


# ----------------------------------------------------------------------------------------
def bench_fk(model, urdf, batches, results, skipped, quick):
    C = model.topology.n_coordinates
    g = torch.Generator().manual_seed(0)
    rows = results.setdefault("fk", {})

    def record(engine, n, sec):
        rows.setdefault(engine, {})[str(n)] = {"s_per_call": sec, "frames_per_s": n / sec}
        print(f"  {engine:28s} batch {n:>8d}: {n / sec / 1e6:9.4f} M frames/s  ({sec * 1e3:9.4f} ms/call)", flush=True)

    qs = {n: model.default_q() + 0.3 * torch.randn(n, C, generator=g) for n in batches}

    # kinfunc eager
    for n in batches:
        if n > 100_000:  # ~20 s per call at 1M
            continue
        with torch.no_grad():
            record("kinfunc_eager", n, timeit(lambda: kf.fk(model, qs[n]), min_time=0.2, min_reps=2))
    # kinfunc compiled (frozen): warm-up measured separately
    fast = kf.compile_fk(model, dynamic=True)  # one symbolic compile for the whole sweep of batch sizes
    warm = {}
    with torch.no_grad():
        for n in batches:
            t0 = time.perf_counter()
            fast.frames_last(qs[n])
            dt = time.perf_counter() - t0
            if dt > 1.0:
                warm[str(n)] = dt
            record("kinfunc_compiled", n, timeit(lambda: fast.frames_last(qs[n]), min_time=0.3))
    # the default call, compile_fk(model) (dynamic=None: its first batch size compiles specialised,
    # what a training loop with a fixed batch gets; issue 14's target is this row)
    if 100_000 in qs:
        default = kf.compile_fk(model)
        with torch.no_grad():
            t0 = time.perf_counter()
            default.frames_last(qs[100_000])
            warm["default_100000"] = time.perf_counter() - t0
            record("kinfunc_compiled_default", 100_000, timeit(lambda: default.frames_last(qs[100_000]), min_time=0.5))
            # batch-first dense output (what fk returns), i.e. including the transpose copy
            record("kinfunc_compiled_default_dense", 100_000,
                   timeit(lambda: [x.contiguous() for x in default(qs[100_000])], min_time=0.5))
    results["compile_warmup_s"] = warm
    print(f"  compile warm-up (first calls that compiled): {warm}", flush=True)
    # lean eager paths at batch 1 (latency)
    with torch.no_grad():
        from kinfunc.compiled import fk_soa

        results["latency_batch1_ms"] = {
            "kinfunc_fk_eager": 1e3 * timeit(lambda: kf.fk(model, qs[1]), min_time=0.3),
            "kinfunc_fk_soa_eager": 1e3 * timeit(lambda: fk_soa(model, qs[1]), min_time=0.3),
            "kinfunc_compiled_lean_single_frame": 1e3 * timeit(lambda: fast(qs[1][0]), min_time=0.3),
            "kinfunc_compiled_batch1": 1e3 * timeit(lambda: fast(qs[1]), min_time=0.3),
        }
    print("  batch-1 latency (ms):", results["latency_batch1_ms"], flush=True)

    # pytorch_kinematics on the same URDF
    try:
        import pytorch_kinematics as pk

        chain = pk.build_chain_from_urdf(Path(urdf).read_bytes()).to(dtype=torch.float32)
        order = [model.coordinate_names.index(nm) for nm in chain.get_joint_parameter_names()]
        with torch.no_grad():
            for n in batches:
                if n > 100_000:
                    continue
                qq = qs[n][:, order].contiguous()
                record("pytorch_kinematics", n, timeit(lambda: chain.forward_kinematics(qq), min_time=0.3, min_reps=2))
    except ImportError:
        skipped.append("pytorch_kinematics (pip install pytorch-kinematics)")

    # Pinocchio: per-frame loop (no batched FK API), from Python
    try:
        import numpy as np
        import pinocchio as pin

        pm = pin.buildModelFromUrdf(str(urdf))
        pd = pm.createData()
        names = [pm.names[i] for i in range(1, pm.njoints)]
        assert pm.nq == C, (pm.nq, names)
        order = [model.coordinate_names.index(nm) for nm in names]
        for n in batches:
            if n > 100_000:
                continue
            qn = qs[n][:, order].double().numpy()

            def loop():
                for k in range(qn.shape[0]):
                    pin.forwardKinematics(pm, pd, qn[k])

            record("pinocchio_python_loop", n, timeit(loop, min_time=0.3, min_reps=2))
        # a sanity check that it computes the same poses
        pin.forwardKinematics(pm, pd, qs[1][0, order].double().numpy())
        ref = kf.fk(model.to(dtype=torch.float64), qs[1][0].double())
        fid = pm.getFrameId("calcn_r")
        pin.updateFramePlacements(pm, pd)
        err = float(np.abs(pd.oMf[fid].translation - ref.t[model.topology.body_index("calcn_r")].numpy()).max())
        results["pinocchio_check_max_abs_m"] = err
    except ImportError:
        skipped.append("pinocchio (pip install pin)")

    # OpenSim: realise positions and read marker locations, per frame (different, bigger model)
    try:
        import opensim as osim

        osim_file = DATA / "opensim-gait2392" / "subject01_simbody.osim"
        if not osim_file.exists():
            raise FileNotFoundError(osim_file)
        om = osim.Model(str(osim_file))
        state = om.initSystem()
        coords = [om.getCoordinateSet().get(i) for i in range(om.getCoordinateSet().getSize())]
        markers = [om.getMarkerSet().get(i) for i in range(om.getMarkerSet().getSize())]
        nfr = 50 if quick else 200
        vals = (0.1 * torch.randn(nfr, len(coords), generator=g)).tolist()

        def run_osim():
            for row in vals:
                for c, v in zip(coords, row):
                    if not c.getLocked(state):
                        c.setValue(state, v, False)
                om.realizePosition(state)
                for mk in markers:
                    mk.getLocationInGround(state)

        sec = timeit(run_osim, min_time=0.5, min_reps=2)
        record("opensim_markers_per_frame", nfr, sec)
        results["opensim_note"] = f"gait2392 subject01 ({len(coords)} coordinates, {len(markers)} markers), Python loop"
    except (ImportError, FileNotFoundError) as e:
        skipped.append(f"opensim ({e})")


def bench_jacobian(model, results, quick):
    n = 200 if quick else 1000
    C = model.topology.n_coordinates
    q = model.default_q() + 0.3 * torch.randn(n, C, generator=torch.Generator().manual_seed(1))
    f = lambda qq: kf.marker_positions(model, qq)  # noqa: E731
    from kinfunc.compiled import fk_soa

    fs = lambda qq: fk_soa(model, qq, markers=True)[1]  # noqa: E731
    out = {}
    out["vmap_jacrev_fk"] = timeit(lambda: torch.func.vmap(torch.func.jacrev(f))(q), min_time=0.2, min_reps=1, max_reps=3)
    out["vmap_jacfwd_fk"] = timeit(lambda: torch.func.vmap(torch.func.jacfwd(f))(q), min_time=0.2, min_reps=2)
    out["vmap_jacfwd_fk_soa"] = timeit(lambda: torch.func.vmap(torch.func.jacfwd(fs))(q), min_time=0.2, min_reps=2)
    results["jacobian"] = {"frames": n, "markers": model.topology.n_markers, "dofs": C,
                           "seconds": {k: v for k, v in out.items() if v is not None}}
    for k, v in out.items():
        if v is not None:
            print(f"  jacobian {k:24s}: {v * 1e3:9.2f} ms for {n} frames", flush=True)


def to_markdown(res) -> str:
    lines = [f"# kinfunc FK benchmark ({res['when']}, {res['machine']['cpu']}, torch {res['torch']}, {res['roofline']['threads']} threads)", ""]
    r = res["roofline"]
    lines += [
        f"Machine: copy {r['copy_GBps']:.1f} GB/s, sgemm {r['sgemm_GFLOPs']:.0f} GFLOP/s, sin {r['sin_per_s'] / 1e9:.2f} G/s. "
        f"FK per frame: {res['fk_cost']['bytes']} B moved, {res['fk_cost']['flop']} row flop-ops, {res['fk_cost']['trig']} sin/cos "
        f"-> roofline {res['roofline_frames_per_s'] / 1e6:.1f} M frames/s.",
        "",
        "FK throughput, M frames/s (median; poses of all 9 bodies, float32):",
        "",
    ]
    engines = list(res["fk"])
    batches = sorted({int(n) for e in engines for n in res["fk"][e]})
    lines.append("| engine | " + " | ".join(str(b) for b in batches) + " |")
    lines.append("|---" * (len(batches) + 1) + "|")
    for e in engines:
        cells = [f"{res['fk'][e][str(b)]['frames_per_s'] / 1e6:.3f}" if str(b) in res["fk"][e] else "" for b in batches]
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    lines += ["", "Ratios (same run):", ""]
    for k, v in res["ratios"].items():
        lines.append(f"- {k}: {v:.2f}" if isinstance(v, float) else f"- {k}: {v}")
    lines += ["", f"Compile warm-up (s): {res.get('compile_warmup_s')}", f"Batch-1 latency (ms): {res.get('latency_batch1_ms')}"]
    if "jacobian" in res:
        j = res["jacobian"]
        lines.append(f"Jacobian of {j['markers']} markers x {j['dofs']} DOF over {j['frames']} frames (s): {j['seconds']}")
    if res["skipped"]:
        lines.append(f"Skipped: {res['skipped']}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller batches, fewer repeats")
    ap.add_argument("--max-batch", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-jacobian", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    batches = [b for b in (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000) if b <= args.max_batch]
    if args.quick:
        batches = [b for b in batches if b <= 100_000]
    model = kf.models.lower_body("cmu", dtype=torch.float32)
    res = {
        "when": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "model": {"name": "lower_body(cmu)", "bodies": model.topology.n_bodies, "dofs": model.topology.n_coordinates, "dtype": "float32"},
    }
    skipped: list[str] = []
    print("roofline ...", flush=True)
    res["roofline"] = machine_roofline(args.threads)
    res["fk_cost"] = fk_cost(model)
    r, c = res["roofline"], res["fk_cost"]
    res["roofline_frames_per_s"] = min(r["copy_GBps"] * 1e9 / c["bytes"], r["sgemm_GFLOPs"] * 1e9 / c["flop"], r["sin_per_s"] / c["trig"])
    with tempfile.TemporaryDirectory() as d:
        urdf = Path(d) / "lower_body.urdf"
        kf.io.save_urdf(model, urdf)
        print("FK throughput ...", flush=True)
        bench_fk(model, urdf, batches, res, skipped, args.quick)
    if not args.no_jacobian:
        print("Jacobians ...", flush=True)
        bench_jacobian(model, res, args.quick)
    fk = res["fk"]
    ratios = {}
    big = max((b for b in batches if str(b) in fk.get("pytorch_kinematics", {})), default=None)
    n100k = "100000" if "100000" in fk.get("kinfunc_compiled", {}) else None
    if n100k:
        comp = max(fk["kinfunc_compiled"][n100k]["frames_per_s"],
                   fk.get("kinfunc_compiled_default", {}).get(n100k, {}).get("frames_per_s", 0.0))
        ratios["compiled_100k_M_frames_per_s"] = comp / 1e6
        ratios["compiled_100k_fraction_of_roofline"] = comp / res["roofline_frames_per_s"]
        if n100k in fk.get("pytorch_kinematics", {}):
            ratios["compiled_vs_pytorch_kinematics_100k"] = comp / fk["pytorch_kinematics"][n100k]["frames_per_s"]
        if n100k in fk.get("pinocchio_python_loop", {}):
            ratios["compiled_vs_pinocchio_loop_100k"] = comp / fk["pinocchio_python_loop"][n100k]["frames_per_s"]
        if n100k in fk.get("kinfunc_eager", {}):
            ratios["compiled_vs_eager_100k"] = comp / fk["kinfunc_eager"][n100k]["frames_per_s"]
        osim = fk.get("opensim_markers_per_frame")
        if osim:
            ratios["compiled_vs_opensim_per_frame"] = comp / next(iter(osim.values()))["frames_per_s"]
    if big is not None:
        ratios["eager_vs_pytorch_kinematics_by_batch"] = {
            b: fk["kinfunc_eager"][b]["frames_per_s"] / fk["pytorch_kinematics"][b]["frames_per_s"]
            for b in fk["pytorch_kinematics"] if b in fk.get("kinfunc_eager", {})
        }
    res["ratios"] = ratios
    res["skipped"] = skipped
    res["wall_s"] = time.perf_counter() - t_start
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = res["when"].replace(":", "").replace("-", "")
    (out_dir / f"fk_{stamp}.json").write_text(json.dumps(res, indent=2))
    md = to_markdown(res)
    (out_dir / "latest.md").write_text(md)
    print(md)
    print(f"wrote {out_dir / f'fk_{stamp}.json'} ({res['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
