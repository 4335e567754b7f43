"""Chain-composition kernels: torch twin, custom op (fake/autograd/vmap), Triton kernel (interpreted)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import kinfunc as kf
from kinfunc.kernels import compose_chain, compose_chain_reference
from kinfunc.kernels import triton_chain as tc

HAVE_TRITON = importlib.util.find_spec("triton") is not None


def _random_tree(B, seed, batch=(5,), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    parents = tuple(-1 if b == 0 else int(torch.randint(-1, b, (1,), generator=g)) for b in range(B))
    rv = torch.randn(batch + (B, 3), generator=g, dtype=dtype)
    R = kf.transforms.rotvec_to_matrix(rv)
    t = torch.randn(batch + (B, 3), generator=g, dtype=dtype)
    return parents, R, t


def test_reverse_sweep_twin_equals_autograd():
    for seed in range(4):
        parents, R, t = _random_tree(7, seed)
        R.requires_grad_(), t.requires_grad_()
        Rw, tw = compose_chain_reference(parents, R, t)
        gR, gt = torch.randn_like(Rw), torch.randn_like(tw)
        ref = torch.autograd.grad((Rw * gR).sum() + (tw * gt).sum(), (R, t))
        got = tc.compose_chain_backward_reference(parents, R.detach(), t.detach(), Rw.detach(), gR, gt)
        torch.testing.assert_close(got[0], ref[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[1], ref[1], rtol=1e-12, atol=1e-12)


def test_custom_op_registration_opcheck():
    parents, R, t = _random_tree(5, 1, batch=(3,))
    torch.library.opcheck(tc.compose_chain_op, (list(parents), R.requires_grad_(), t.requires_grad_()))


def test_custom_op_values_grads_and_vmap_match_twin():
    parents, R, t = _random_tree(6, 2, batch=(4,))
    Rw, tw = tc.compose_chain_op(list(parents), R, t)
    Rr, tr = compose_chain_reference(parents, R, t)
    torch.testing.assert_close(Rw, Rr, rtol=0, atol=1e-14)
    torch.testing.assert_close(tw, tr, rtol=0, atol=1e-14)
    # vmap over a leading batch, and one input unbatched
    Rv, tv = torch.func.vmap(lambda a, b: tc.compose_chain_op(list(parents), a, b))(R, t)
    torch.testing.assert_close(Rv, Rr)
    Rv2, tv2 = torch.func.vmap(lambda b: tc.compose_chain_op(list(parents), R[0], b))(t)
    torch.testing.assert_close(tv2, compose_chain_reference(parents, R[0].expand_as(R), t)[1])
    # (torch.func.grad/jacrev through the op are not supported in torch 2.13: compose_chain
    # routes those to the twin)


def test_compose_chain_dispatches_to_twin_on_cpu():
    parents, R, t = _random_tree(5, 3)
    a = compose_chain(parents, R, t)
    b = compose_chain_reference(parents, R, t)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


TRITON_SCRIPT = textwrap.dedent(
    """
    import os
    assert os.environ["TRITON_INTERPRET"] == "1"
    import torch, kinfunc as kf
    from kinfunc.fk import local_transforms
    from kinfunc.kernels import compose_chain_reference
    from kinfunc.kernels import triton_chain as tc
    assert tc.triton_runs_on(torch.zeros(1))
    g = torch.Generator().manual_seed(0)
    cases = []
    m = kf.models.lower_body("cmu", dtype=torch.float64)
    q = m.default_q() + 0.5 * torch.randn(150, 18, generator=g, dtype=torch.float64)
    Rl, tl = local_transforms(m, q)
    cases.append((m.topology.parents, Rl, tl, (m, q)))
    for B, seed in ((1, 1), (9, 2)):
        gg = torch.Generator().manual_seed(seed)
        parents = tuple(-1 if b == 0 else int(torch.randint(-1, b, (1,), generator=gg)) for b in range(B))
        R = kf.transforms.rotvec_to_matrix(torch.randn(2, 65, B, 3, generator=gg))
        t = torch.randn(2, 65, B, 3, generator=gg)
        cases.append((parents, R, t, None))
    for parents, R, t, mq in cases:
        tol = 1e-12 if R.dtype == torch.float64 else 1e-5
        R = R.clone().requires_grad_(); t = t.clone().requires_grad_()
        Rw, tw = tc.compose_chain_op(list(parents), R, t)
        Rr, tr = compose_chain_reference(parents, R, t)
        torch.testing.assert_close(Rw, Rr, rtol=0, atol=tol)
        torch.testing.assert_close(tw, tr, rtol=0, atol=tol)
        wR, wt = torch.randn_like(Rw), torch.randn_like(tw)
        g1 = torch.autograd.grad((Rw * wR).sum() + (tw * wt).sum(), (R, t))
        g2 = torch.autograd.grad((Rr * wR).sum() + (tr * wt).sum(), (R, t))
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, rtol=0, atol=10 * tol)
        if mq is not None:  # whole FK through the kernel equals kf.fk, incl. gradient in q
            m, q = mq
            qq = q.clone().requires_grad_()
            Rl2, tl2 = local_transforms(m, qq)
            Rk, tk = tc.compose_chain_op(list(parents), Rl2, tl2)
            P = kf.fk(m, qq)
            torch.testing.assert_close(Rk, P.R, rtol=0, atol=1e-12)
            torch.testing.assert_close(tk, P.t, rtol=0, atol=1e-12)
            ga = torch.autograd.grad(tk.sum() + Rk.sum(), qq)[0]
            gb = torch.autograd.grad(P.t.sum() + P.R.sum(), qq)[0]
            torch.testing.assert_close(ga, gb, rtol=0, atol=1e-11)
    # vmap rule feeding the Triton path
    parents, R, t, _ = cases[1]
    Rv, tv = torch.func.vmap(lambda a, b: tc.compose_chain_op(list(parents), a, b))(R.detach(), t.detach())
    Rr, tr = compose_chain_reference(parents, R.detach(), t.detach())
    torch.testing.assert_close(Rv, Rr, rtol=0, atol=1e-5)
    torch.testing.assert_close(tv, tr, rtol=0, atol=1e-5)
    print("TRITON-INTERPRET-OK")
    """
)


@pytest.mark.skipif(not HAVE_TRITON, reason="triton not installed (pip install kinfunc[triton])")
def test_triton_kernel_interpreted_on_cpu_matches_twin_and_fk():
    # a subprocess: TRITON_INTERPRET must be set before triton is imported, and must not leak
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", TRITON_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "TRITON-INTERPRET-OK" in out.stdout


COMPILED_SCRIPT = textwrap.dedent(
    """
    import os
    assert os.environ["TRITON_INTERPRET"] == "1"
    import torch, kinfunc as kf
    import torch._inductor.config as inductor_config
    from torch._inductor.utils import run_and_get_code
    from kinfunc.kernels import chain
    from kinfunc.kernels import triton_chain as tc
    assert tc.triton_runs_on(torch.zeros(1))
    runs = []
    _fwd = tc._triton_forward
    tc._triton_forward = lambda *a: runs.append("fwd") or _fwd(*a)
    chain._FORCE_OP = True  # route compiled FK's tree composition through the op, as on CUDA
    mb = kf.ModelBuilder("small")
    mb.add_body("a", kf.Joint.free("root", ("r1", "r2", "r3", "x", "y", "z")))
    mb.add_body("b", kf.Joint.pin("j", "a", "k", axis=(0.2, 0.1, 1.0), parent_location=(0, -0.4, 0)))
    mb.add_body("c", kf.Joint.pin("j2", "b", "k2", axis=(0, 0, 1), parent_location=(0, -0.4, 0)))
    mb.add_marker("mk", "c", (0.1, -0.1, 0.0))
    model = mb.build(dtype=torch.float32)
    scales = torch.full_like(model.body_scales, 1.1).requires_grad_()
    model = model.replace(body_scales=scales)
    g = torch.Generator().manual_seed(0)
    q = (0.7 * torch.randn(24, 8, generator=g)).requires_grad_()
    fast = kf.compile_fk(model)  # a leaf requires grad: the leaves form
    # scalar CPU loops: inductor 2.13's CPU vectoriser miscompiles this graph's backward (see
    # tests/test_compiled.py); on CUDA the graph is Triton code
    with inductor_config.patch({"cpp.simdlen": 1}):
        (P, X), codes = run_and_get_code(fast.poses_and_markers, q)
        gq, gs = torch.autograd.grad((X ** 2).sum() + P.t.sum(), (q, scales))
    assert "torch.ops.kinfunc.compose_chain.default" in "\\n".join(codes)
    assert runs, "the Triton kernel did not run"
    Pr, Xr = kf.fk(model, q), kf.marker_positions(model, q)
    torch.testing.assert_close(P.R, Pr.R, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(P.t, Pr.t, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(X, Xr, rtol=1e-5, atol=2e-6)
    rq, rs = torch.autograd.grad((Xr ** 2).sum() + Pr.t.sum(), (q, scales))
    torch.testing.assert_close(gq, rq, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gs, rs, rtol=1e-4, atol=1e-5)
    print("COMPILED-TRITON-OK")
    """
)


@pytest.mark.skipif(not HAVE_TRITON, reason="triton not installed (pip install kinfunc[triton])")
def test_compiled_fk_runs_the_triton_kernel_through_the_custom_op_interpreted():
    """compile_fk's leaves form with the tree composed by kinfunc::compose_chain (the routing it
    takes on CUDA), the op running the Triton kernel under TRITON_INTERPRET=1: inductor's code
    calls the op, and values and gradients (q, model leaves) equal kf.fk."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", COMPILED_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "COMPILED-TRITON-OK" in out.stdout
