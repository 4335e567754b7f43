"""CUDA: the Triton chain kernel, FK and IK on the GPU equal the CPU (skipped without a GPU)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import kinfunc as kf
from kinfunc.ik.synthetic import gait_motion, synthetic_trial
from kinfunc.kernels import compose_chain_reference
from kinfunc.kernels import triton_chain as tc

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
HAVE_TRITON = importlib.util.find_spec("triton") is not None
cuda = torch.device("cuda")


def _random_tree(B, seed, batch, dtype):
    g = torch.Generator().manual_seed(seed)
    parents = tuple(-1 if b == 0 else int(torch.randint(-1, b, (1,), generator=g)) for b in range(B))
    R = kf.transforms.rotvec_to_matrix(torch.randn(batch + (B, 3), generator=g, dtype=torch.float64))
    t = torch.randn(batch + (B, 3), generator=g, dtype=torch.float64)
    return parents, R.to(cuda, dtype), t.to(cuda, dtype)


@pytest.mark.skipif(not HAVE_TRITON, reason="triton not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triton_kernel_on_cuda_matches_twin_values_and_grads(dtype):
    assert tc.triton_runs_on(torch.zeros(1, device=cuda))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for B, batch in ((7, (1000,)), (23, (3, 77)), (1, (5,))):
        parents, R, t = _random_tree(B, B, batch, dtype)
        R.requires_grad_(), t.requires_grad_()
        Rw, tw = tc.compose_chain_op(list(parents), R, t)
        Rr, tr = compose_chain_reference(parents, R, t)
        torch.testing.assert_close(Rw, Rr, **tol)
        torch.testing.assert_close(tw, tr, **tol)
        gR, gt = torch.randn_like(Rw), torch.randn_like(tw)
        got = torch.autograd.grad((Rw * gR).sum() + (tw * gt).sum(), (R, t))
        ref = torch.autograd.grad((Rr * gR).sum() + (tr * gt).sum(), (R, t))
        torch.testing.assert_close(got[0], ref[0], **tol)
        torch.testing.assert_close(got[1], ref[1], **tol)


def test_fk_and_gradients_on_cuda_equal_cpu():
    model = kf.models.lower_body("opensim", dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    q = model.default_q() + 0.4 * torch.randn(64, model.topology.n_coordinates, generator=g, dtype=torch.float64)
    mg = model.to(device=cuda)
    qg = q.to(cuda).requires_grad_()
    pg = kf.marker_positions(mg, qg)  # compose_chain dispatches to the Triton op on CUDA
    (gg,) = torch.autograd.grad(pg.square().sum(), qg)
    qc = q.clone().requires_grad_()
    pc = kf.marker_positions(model, qc)
    (gc,) = torch.autograd.grad(pc.square().sum(), qc)
    torch.testing.assert_close(pg.cpu(), pc, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gg.cpu(), gc, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fit", [("pose",), ("pose", "segment_scales", "marker_offsets")])
def test_ik_on_cuda_equals_cpu(fit):
    model = kf.models.lower_body("opensim", dtype=torch.float64)
    q = gait_motion(model, 60)
    trial = synthetic_trial(model, q, noise=0.004, gaps=0.1, seed=3)
    cpu = kf.ik.solve(model, trial, fit=fit)
    gpu = kf.ik.solve(model, trial, fit=fit, device="cuda")
    assert gpu.q.is_cuda and gpu.converged and cpu.converged
    assert abs(gpu.objective - cpu.objective) <= 1e-6 * cpu.objective
    torch.testing.assert_close(gpu.q.cpu(), cpu.q, rtol=0, atol=1e-5)
