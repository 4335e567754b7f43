"""Train a small network to predict joint angles from keypoints, supervised through kinematics.

A tiny synthetic task for :class:`kinfunc.nn.KeypointLayer`: random poses inside the
anatomical ranges of ``kf.models.full_body`` are turned into COCO-17 keypoints by the layer,
noise is added, and an MLP maps the noisy keypoints back to the 40 coordinates ``q``. The MLP
is never shown ``q``: its loss is the keypoint error of ``layer(q_pred)`` against the clean
keypoints, plus :meth:`~kinfunc.nn.KeypointLayer.joint_limit_penalty` so that the predicted
poses stay anatomical. About 200 steps run in well under a minute on one CPU core::

    python examples/keypoint_regression.py            # --steps 200 --batch 256 --noise 0.005
"""
from __future__ import annotations

import argparse
import math
import time

import torch

import kinfunc as kf


def random_poses(layer: kf.nn.KeypointLayer, n: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, C)`` poses: clamped coordinates uniform in the middle 40 % of their ranges, the
    pelvis standing (about 0.95 m high), heading within +-45 deg and a small tilt and list."""
    model = layer.model
    lo, hi = model.coordinate_limits()
    clamped = torch.tensor(model.topology.coordinate_clamped)
    centre = torch.where(clamped, 0.5 * (lo + hi), torch.zeros_like(lo))
    half = torch.where(clamped, 0.2 * (hi - lo), torch.zeros_like(lo))
    u = 2.0 * torch.rand(n, lo.numel(), generator=generator) - 1.0
    q = centre + half * u
    free = {"pelvis_tilt": 0.2, "pelvis_list": 0.2, "pelvis_rotation": math.pi / 4,
            "pelvis_tx": 0.5, "pelvis_tz": 0.5, "pelvis_ty": 0.05}  # fmt: skip
    for name, amp in free.items():
        k = model.topology.coordinate_index(name)
        q[:, k] = amp * u[:, k] + (0.95 if name == "pelvis_ty" else 0.0)
    return q


def make_mlp(n_in: int, n_out: int, width: int = 256) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(n_in, width), torch.nn.SiLU(),
        torch.nn.Linear(width, width), torch.nn.SiLU(),
        torch.nn.Linear(width, n_out),
    )  # fmt: skip


def main(steps: int = 200, batch: int = 256, noise: float = 0.005, limit_weight: float = 1e-2,
         lr: float = 1e-2, seed: int = 0, verbose: bool = True) -> dict:
    """Train; returns ``{"losses": [...], "keypoint_error_mm": ..., "penalty": ..., "seconds": ...}``
    (the error: mean Euclidean keypoint error on 512 held-out poses, millimetres)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    layer = kf.nn.KeypointLayer(keypoints="coco17")  # full_body with COCO-17 keypoints, float32
    K, C = len(layer.keypoint_names), len(layer.coordinate_names)
    net = make_mlp(3 * K, C)
    # the network predicts q in units of each coordinate's typical excursion, from mid-range
    lo, hi = layer.model.coordinate_limits()
    clamped = torch.tensor(layer.topology.coordinate_clamped)
    q0 = torch.where(clamped, 0.5 * (lo + hi), layer.model.default_q())
    span = torch.where(clamped, 0.5 * (hi - lo), torch.ones_like(lo))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    hips = [layer.keypoint_names.index(n) for n in ("left_hip", "right_hip")]
    trans = [layer.coordinate_names.index(n) for n in ("pelvis_tx", "pelvis_ty", "pelvis_tz")]
    place = torch.zeros(3, C)
    place[[0, 1, 2], trans] = 1.0

    def predict(x: torch.Tensor) -> torch.Tensor:
        """Keypoints ``(N, K, 3)`` -> ``q (N, C)``: the network sees them relative to the mid-hip
        point, which is added back to the pelvis translation."""
        centre = x[:, hips].mean(1)  # (N, 3)
        return q0 + span * net((x - centre[:, None]).flatten(-2)) + centre @ place

    with torch.no_grad():
        q_test = random_poses(layer, 512, gen)
        x_test = layer(q_test)
    losses = []
    t0 = time.perf_counter()
    for step in range(steps):
        with torch.no_grad():
            x_true = layer(random_poses(layer, batch, gen))
            x_in = x_true + noise * torch.randn(x_true.shape, generator=gen)
        q_pred = predict(x_in)
        x_pred = layer(q_pred)
        mse = (x_pred - x_true).square().sum(-1).mean()  # m^2 per keypoint
        loss = mse + limit_weight * layer.joint_limit_penalty(q_pred).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if verbose and (step % 20 == 0 or step == steps - 1):
            print(f"step {step:4d}  loss {losses[-1]:.6f}  keypoint RMS {1000 * mse.item() ** 0.5:6.1f} mm")
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        q_pred = predict(x_test + noise * torch.randn(x_test.shape, generator=gen))
        err = (layer(q_pred) - x_test).norm(dim=-1).mean()
        pen = layer.joint_limit_penalty(q_pred).mean()
    out = {"losses": losses, "keypoint_error_mm": 1000 * float(err), "penalty": float(pen), "seconds": seconds}
    if verbose:
        print(f"{steps} steps in {seconds:.1f} s; loss {losses[0]:.5f} -> {losses[-1]:.5f}; "
              f"held-out mean keypoint error {out['keypoint_error_mm']:.1f} mm, mean limit penalty {out['penalty']:.2e}")
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--noise", type=float, default=0.005, help="keypoint noise, m (std)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    main(steps=a.steps, batch=a.batch, noise=a.noise)
