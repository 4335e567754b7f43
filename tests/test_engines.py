"""Every forward engine driven by one random-tree strategy (tests/strategies.py): fk, the
structure-of-arrays code that compile_fk compiles, the frozen (constants-baked) rows, the IK
Jacobian plan (= jacrev of fk's markers, and its normal equations = J^T J), the frames-last
core's three compositions (kinfunc.kinematics.forward), and the chain kernel's custom op --
values and gradients, float64 and float32. The torch.compile'd forms and
the Triton kernel under TRITON_INTERPRET=1 are exercised on fixed models in test_compiled.py and
test_kernels.py (compiling per random tree would take minutes)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from torch.func import jacrev, vmap

import kinfunc as kf
from kinfunc.compiled import _fk_frozen_impl, _frozen_consts, _plan, fk_soa
from kinfunc.fk import local_transforms
from kinfunc.ik.jacobian import JacobianPlan, MarkerTargets
from kinfunc.kernels import compose_chain_reference
from kinfunc.kernels.triton_chain import compose_chain_op
from kinfunc.kinematics import KinematicPlan, forward, joint_constants

from .naive import naive_fk
from .test_compiled import rich_model
from .strategies import model_and_q

f64, f32 = torch.float64, torch.float32


def _close(a, b, dtype, scale=1.0):
    tol = (1e-11 if dtype == f64 else 2e-5) * scale
    torch.testing.assert_close(a, b, rtol=0, atol=tol)


@settings(max_examples=15, deadline=None)
@given(model_and_q(batch=(3,)))
def test_every_forward_engine_equals_the_naive_reference(mq):
    model, q = mq
    H, Xn = zip(*(naive_fk(model, qt) for qt in q))
    H, Xn = torch.stack(H), torch.stack(Xn)
    Rn, tn = H[..., :3, :3], H[..., :3, 3]
    for dtype in (f64, f32):
        m, qq = model.to(dtype=dtype), q.to(dtype)
        P = kf.fk(m, qq)
        _close(P.R, Rn.to(dtype), dtype)
        _close(P.t, tn.to(dtype), dtype)
        S, X = fk_soa(m, qq, markers=True)
        _close(S.R, P.R, dtype)
        _close(S.t, P.t, dtype)
        _close(X, kf.marker_positions(m, qq), dtype)
        _close(X, Xn.to(dtype), dtype)
        R, t, Xf = _fk_frozen_impl(_plan(m.topology), _frozen_consts(m), m.slot_params, m.coupler_params, qq.t(), True)
        _close(R.permute(3, 0, 1, 2), P.R, dtype)
        _close(t.permute(2, 0, 1), P.t, dtype)
        _close(Xf.permute(2, 0, 1), X, dtype)
        # the kernel's composition from fk's local transforms
        Rl, tl = local_transforms(m, qq)
        Rc, tc = compose_chain_reference(m.topology.parents, Rl, tl)
        _close(Rc, P.R, dtype)
        _close(tc, P.t, dtype)
        # the frames-last core: 3 x 4 per level (IK), R and t apart (compiled leaves form), the
        # chain custom op (CUDA; here its torch twin), bodies in level order
        _check_core_compositions(m, qq, P, X, dtype)


def _check_core_compositions(m, q, P, X, dtype):
    plan = KinematicPlan.build(m.topology)
    consts = joint_constants(plan, m)
    o = plan.order
    for kw in ({}, {"homogeneous": False}, {"chain_op": compose_chain_op}):
        f = forward(plan, consts, q.t(), **kw)
        _close(f.R.permute(3, 0, 1, 2), P.R[:, o], dtype)
        _close(f.t.permute(2, 0, 1), P.t[:, o], dtype)
        _close(f.p.permute(2, 0, 1), X, dtype)


def test_core_compositions_on_a_tree_out_of_level_order():
    """A tree whose model order is not its level order (the core reorders around the chain op)."""
    model = rich_model()
    assert KinematicPlan.build(model.topology).order_inv is not None
    q = model.default_q() + 0.5 * torch.randn(4, model.topology.n_coordinates, generator=torch.Generator().manual_seed(0), dtype=f64)
    _check_core_compositions(model, q, kf.fk(model, q), kf.marker_positions(model, q), f64)


@settings(max_examples=15, deadline=None)
@given(model_and_q(batch=(4,)))
def test_jacobian_plan_equals_jacrev_and_its_normal_equations_equal_jtj(mq):
    model, q = mq
    plan = JacobianPlan.build(model)
    kin = plan.evaluate(model, plan.constants(model), q, jacobian=True)
    ref = vmap(jacrev(lambda qq: kf.marker_positions(model, qq)))(q)  # (T, M, 3, C)
    _close(kin.p, kf.marker_positions(model, q), f64)
    _close(kin.J, ref, f64, scale=10)
    # normal equations from marker moments vs forming J: targets at random offsets, weights
    g = torch.Generator().manual_seed(0)
    X = kin.p + 0.05 * torch.randn(kin.p.shape, generator=g, dtype=f64)
    w = torch.rand(kin.p.shape[:2], generator=g, dtype=f64)
    cost, A, b = plan.normal_equations(model, plan.constants(model), q, MarkerTargets.of(X, w))[:3]
    r = (kin.p - X) * w[..., None]
    Jw = (ref * w[..., None, None]).reshape(q.shape[0], 3 * model.topology.n_markers, q.shape[-1])
    _close(cost, (r * r).sum((-1, -2)), f64, scale=10)
    _close(A, Jw.transpose(-1, -2) @ Jw, f64, scale=100)
    _close(b, (Jw.transpose(-1, -2) @ r.reshape(q.shape[0], -1, 1))[..., 0], f64, scale=100)


@settings(max_examples=10, deadline=None)
@given(model_and_q(batch=(2,)))
def test_gradients_agree_across_engines(mq):
    """d(loss)/dq and d(loss)/d(every model leaf) through fk and through the SoA code."""
    model, q = mq
    w = torch.linspace(-1, 1, 3 * model.topology.n_markers, dtype=f64).reshape(-1, 3)

    def loss(fn, m, qq):
        X = fn(m, qq)
        return (X * w).sum() + (X**2).sum()

    leaves = [model.marker_offsets, model.body_scales, model.parent_location, model.child_orientation]
    for engine in (kf.marker_positions, lambda m, qq: fk_soa(m, qq, markers=True)[1]):
        qg = q.clone().requires_grad_(True)
        ls = [x.clone().requires_grad_(True) for x in leaves]
        m = model.replace(marker_offsets=ls[0], body_scales=ls[1], parent_location=ls[2], child_orientation=ls[3])
        inputs = [qg, *ls]
        grads = torch.autograd.grad(loss(engine, m, qg), inputs, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
        if engine is kf.marker_positions:
            ref = grads
        else:
            for a, b in zip(grads, ref):
                _close(a, b, f64, scale=100)
