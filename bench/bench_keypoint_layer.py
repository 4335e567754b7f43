"""kinfunc.nn.KeypointLayer for training: forward + backward at batch 4096, against 4x4 chains.

Usage::

    python bench/bench_keypoint_layer.py [--batch 4096] [--threads 1] [--no-compile]
                                         [--out bench/results/keypoint_layer.json]

What is timed (float32, one call = keypoints of ``N`` poses, then the backward of a weighted
sum to ``q``; median of repeated calls after warm-up; CPU, and CUDA when available):

* ``kinfunc``: ``KeypointLayer`` eager; ``kinfunc_scaled``: the same with per-sample scales
  ``(N, B, 3)``; ``kinfunc_compiled``: ``torch.compile(layer)`` (inductor);
  ``kinfunc_compile_fk``: ``kf.compile_fk(model).markers`` (the frozen structure-of-arrays
  form: the model's values baked in, gradients to ``q`` only, no per-sample scales); cold
  compile times are reported separately (``compile_s``);
* ``pytorch_kinematics``: ``pk.build_chain_from_urdf`` of ``kf.io.save_urdf(model)``; its
  link poses times the keypoint offsets;
* ``naive_4x4``: a chain of 4x4 homogeneous transforms written here, pytorch_kinematics-style:
  per joint ``T_parent_frame @ Trans(slots) @ Rot(slot 1) @ Rot(slot 2) @ Rot(slot 3) @
  T_child_frame^-1``, one batched 4x4 product at a time down the tree.

The model: ``kf.models.full_body("coco17", rolling_knee=False, shoulder_rhythm=False)`` (40
coordinates, 23 bodies, 17 keypoints). The default full body (spline knee translations and
shoulder-girdle rhythm) is not URDF-expressible, so the 4x4 chains run on this variant; the
default model's kinfunc timing is reported next to it (``kinfunc_default_model``). All engines
are checked to give the same keypoints before timing.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import kinfunc as kf
from kinfunc import functions as F
from kinfunc import transforms as tf

OUT = Path(__file__).resolve().parent / "results" / "keypoint_layer.json"


def timeit(fn, device, min_time=0.5, min_reps=5, max_reps=200):
    """Median seconds per call after two warm-up calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        fn()
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---------------------------------------------------------------------------------- naive 4x4


def _linear_slots(model):
    """``{(body, slot): (coordinate index or None, slope, intercept)}`` for a model whose slot
    functions are all constant or linear (what URDF expresses)."""
    out = {}
    for g, params in zip(model.topology.slot_groups, model.slot_params):
        for k, (o, inp) in enumerate(zip(g.outputs, g.inputs)):
            b, s = divmod(o, 6)
            if g.key[0] is F.FnKind.CONSTANT:
                out[(b, s)] = (None, 0.0, float(params[0][k]))
            elif g.key[0] is F.FnKind.LINEAR:
                out[(b, s)] = (inp, float(params[0][k]), float(params[1][k]))
            else:
                raise ValueError(f"slot {s} of joint {model.topology.joint_names[b]} is {g.key[0].value}; not linear")
    if model.topology.dependent_names:
        raise ValueError("couplers are not supported by the naive chain")
    return out


def _homogeneous(R, t):
    T = torch.zeros(R.shape[:-2] + (4, 4), dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def naive_chain(model):
    """A function ``q (N, C) -> keypoints (N, K, 3)`` composing 4x4 matrices joint by joint."""
    topo = model.topology
    slots = _linear_slots(model)
    axes = model.axes / model.axes.norm(dim=-1, keepdim=True)
    Rp = tf.euler_xyz_to_matrix(model.parent_orientation)
    Rc = tf.euler_xyz_to_matrix(model.child_orientation)
    Tp = _homogeneous(Rp, model.parent_location)
    Tc_inv = _homogeneous(Rc.transpose(-1, -2), -(Rc.transpose(-1, -2) @ model.child_location[..., None])[..., 0])
    offsets = torch.cat((model.marker_offsets, torch.ones_like(model.marker_offsets[:, :1])), -1)  # (K, 4)
    eye3 = torch.eye(3, dtype=model.dtype, device=model.device)

    def rot(axis, angle):  # (3,), (N,) -> (N, 4, 4)
        K = tf.skew(axis)
        s, c = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
        R = eye3 + s * K + (1 - c) * (K @ K)
        return _homogeneous(R, torch.zeros(angle.shape + (3,), dtype=angle.dtype, device=angle.device))

    def trans(t):  # (N, 3) -> (N, 4, 4)
        return _homogeneous(eye3.expand(t.shape[:-1] + (3, 3)), t)

    def value(q, spec):
        inp, slope, icpt = spec
        if inp is None:
            return q.new_full(q.shape[:1], icpt)
        return slope * q[:, inp] + icpt

    def run(q):
        world = []
        for b in range(topo.n_bodies):
            T = Tp[b].expand(q.shape[:1] + (4, 4))
            tr = [(s, slots[(b, s)]) for s in range(3, 6) if (b, s) in slots]
            if tr:
                t = sum(value(q, spec)[:, None] * axes[b, s] for s, spec in tr)
                T = T @ trans(t)
            for s in range(3):
                if (b, s) in slots:
                    T = T @ rot(axes[b, s], value(q, slots[(b, s)]))
            T = T @ Tc_inv[b]
            p = topo.parents[b]
            world.append(T if p < 0 else world[p] @ T)
        Tw = torch.stack([world[b] for b in topo.marker_bodies], -3)  # (N, K, 4, 4)
        return (Tw @ offsets[..., None])[..., :3, 0]

    return run


# ---------------------------------------------------------------------------------- pytorch_kinematics


def pk_chain(model, device):
    """``q -> keypoints`` through pytorch_kinematics on ``kf.io.save_urdf(model)``, or None."""
    try:
        import pytorch_kinematics as pk
    except ImportError:
        return None, "pytorch_kinematics not installed (pip install pytorch-kinematics)"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.urdf"
        kf.io.save_urdf(model, path)
        chain = pk.build_chain_from_urdf(path.read_bytes()).to(dtype=model.dtype, device=str(device))
    names = chain.get_joint_parameter_names()
    cols = [model.topology.coordinate_index(n) for n in names]  # URDF joints carry coordinate names
    bodies = [model.topology.body_names[b] for b in model.topology.marker_bodies]
    offsets = torch.cat((model.marker_offsets, torch.ones_like(model.marker_offsets[:, :1])), -1)

    def run(q):
        links = chain.forward_kinematics(q[:, cols])
        Tw = torch.stack([links[n].get_matrix() for n in bodies], -3)  # (N, K, 4, 4)
        return (Tw @ offsets[..., None])[..., :3, 0]

    return run, f"pytorch_kinematics {getattr(pk, '__version__', '')}".strip()


# ---------------------------------------------------------------------------------- bench


def random_q(model, n, gen):
    lo, hi = model.coordinate_limits()
    lo, hi = lo.clamp(min=-1.0), hi.clamp(max=1.0)
    return lo + (hi - lo) * torch.rand(n, lo.numel(), generator=gen, dtype=model.dtype).to(model.device)


def fwd_bwd(fn, q, w):
    def call():
        qq = q.detach().requires_grad_()
        (fn(qq) * w).sum().backward()
        return qq.grad

    return call


def bench_device(device, batch, do_compile):
    res: dict = {"device": str(device), "batch": batch, "ms": {}, "notes": []}
    plain = kf.models.full_body("coco17", rolling_knee=False, shoulder_rhythm=False, device=device)
    default = kf.models.full_body("coco17", device=device)
    gen = torch.Generator().manual_seed(0)
    q = random_q(plain, batch, gen)
    w = torch.randn(batch, 17, 3, generator=gen).to(device)
    S = (0.9 + 0.2 * torch.rand(batch, plain.topology.n_bodies, 3, generator=gen)).to(device)
    layer = kf.nn.KeypointLayer(plain).to(device)
    layer_default = kf.nn.KeypointLayer(default).to(device)
    engines = {
        "kinfunc": layer,
        "kinfunc_scaled": lambda qq: layer(qq, S),
        "kinfunc_default_model": layer_default,
        "naive_4x4": naive_chain(plain),
    }
    pk_run, pk_note = pk_chain(plain, device)
    res["notes"].append(pk_note)
    if pk_run is not None:
        engines["pytorch_kinematics"] = pk_run
    if do_compile:
        t0 = time.perf_counter()
        compiled = torch.compile(layer)
        fwd_bwd(compiled, q, w)()
        if device.type == "cuda":
            torch.cuda.synchronize()
        res["compile_s"] = {"torch.compile(layer)": time.perf_counter() - t0}
        engines["kinfunc_compiled"] = compiled
        t0 = time.perf_counter()
        fk_fast = kf.compile_fk(plain)  # frozen model: gradients to q only, no per-sample scales
        fwd_bwd(fk_fast.markers, q, w)()
        if device.type == "cuda":
            torch.cuda.synchronize()
        res["compile_s"]["compile_fk"] = time.perf_counter() - t0
        engines["kinfunc_compile_fk"] = fk_fast.markers
    # same keypoints from every engine on the URDF-expressible model
    with torch.no_grad():
        ref = kf.marker_positions(plain, q[:64])
        res["max_abs_diff_m"] = {}
        for name, fn in engines.items():
            if name == "kinfunc_default_model":
                continue
            x = fn(q[:64]) if name != "kinfunc_scaled" else layer(q[:64], torch.ones_like(S[:64]))
            diff = float((x - ref).abs().max())
            res["max_abs_diff_m"][name] = diff
            assert diff < 1e-4, (name, diff)
    for name, fn in engines.items():
        res["ms"][name] = 1000 * timeit(fwd_bwd(fn, q, w), device)
        print(f"  {device.type} {name:24s} {res['ms'][name]:9.2f} ms  (forward + backward, N={batch})", flush=True)
    base = res["ms"]["kinfunc"]
    res["ratio_vs_kinfunc"] = {k: v / base for k, v in res["ms"].items()}
    if "kinfunc_compiled" in res["ms"]:
        res["ratio_vs_kinfunc_compiled"] = {k: v / res["ms"]["kinfunc_compiled"] for k, v in res["ms"].items()}
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile and compile_fk (minutes cold on 2 CPU cores)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    out = {
        "what": "KeypointLayer forward+backward vs 4x4 homogeneous chains, full_body coco17 "
        "(rolling_knee=False, shoulder_rhythm=False for URDF), float32",
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": a.threads,
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": [],
    }
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for dev in devices:
        out["runs"].append(bench_device(dev, a.batch, not a.no_compile))
        r = out["runs"][-1]
        print(f"{dev}: " + ", ".join(f"{k} {v:.2f}x" for k, v in r["ratio_vs_kinfunc"].items()) + " (time / kinfunc eager)")
    out["wall_s"] = time.perf_counter() - t0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {a.out} ({out['wall_s']:.0f} s)")
    return out


if __name__ == "__main__":
    main()
