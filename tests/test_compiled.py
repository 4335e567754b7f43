"""compile_fk / structure-of-arrays FK equals the reference fk (values and gradients)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kinfunc as kf
from kinfunc import functions as F
from kinfunc.compiled import compile_fk, fk_soa


def rich_model(dtype=torch.float64) -> kf.Model:
    """Every slot kind: free root, ball, pin with frames, slider, weld, spline/poly couplers, scales."""
    mb = kf.ModelBuilder("rich")
    mb.add_body("base", kf.Joint.free("root", ("rz", "rx", "ry", "tx", "ty", "tz"), parent_location=(0.1, 0.9, -0.2)))
    mb.add_body(
        "arm",
        kf.Joint.ball(
            "shoulder", "base", ("a1", "a2", "a3"), axes=((0.3, 1, 0), (1, 0, 0.2), (0, 0.5, 1)),
            parent_location=(0.0, 0.2, 0.1), parent_orientation=(0.3, -0.2, 0.5),
            child_location=(0.05, -0.02, 0.01), child_orientation=(-0.1, 0.4, 0.2),
        ),
    )
    mb.add_body(
        "fore",
        kf.Joint(
            "elbow", "arm", parent_location=(0.0, -0.3, 0.0),
            rotations=(kf.Dof((0, 0, 1), "flex"),),
            translations=(
                kf.Dof((1, 0, 0), "flex_dep", F.Linear()),
                kf.Dof((0, 1, 0), "flex", F.Polynomial((0.01, -0.02, 0.003))),
            ),
        ),
    )
    mb.add_body("slide", kf.Joint.slider("sl", "fore", "s", axis=(0.2, 1.0, 0.1), parent_orientation=(0.1, 0.2, 0.3)))
    mb.add_body("tip", kf.Joint.weld("w", "slide", parent_location=(0.01, 0.02, 0.03), child_orientation=(0.2, 0.0, -0.1)))
    mb.add_body("other", kf.Joint.pin("p2", "base", "a1b", axis=(1, 1, 0), parent_location=(0, 0, 0.2)))
    mb.add_coupler("flex_dep", "flex", F.Spline((-2.0, -1.0, 0.0, 0.5, 1.5), (0.0, 0.01, 0.0, -0.02, 0.01), F.SplineEnd.SIMM))
    mb.add_marker("m0", "base", (0.1, 0.0, 0.0))
    mb.add_marker("m1", "fore", (0.0, -0.2, 0.05))
    mb.add_marker("m2", "tip", (0.01, 0.0, 0.02))
    m = mb.build(dtype=dtype)
    g = torch.Generator().manual_seed(0)
    return m.replace(
        body_scales=1.0 + 0.2 * torch.rand(m.body_scales.shape, generator=g, dtype=dtype),
        global_scale=torch.tensor(1.1, dtype=dtype),
    )


def _rand_q(model, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return model.default_q() + 0.8 * torch.randn(shape + (model.topology.n_coordinates,), generator=g, dtype=model.dtype)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), marker_set=st.sampled_from(["cmu", "opensim"]), batch=st.sampled_from([(), (1,), (4,), (2, 3)]))
def test_soa_equals_fk_float64(seed, marker_set, batch):
    for model in (kf.models.lower_body(marker_set, dtype=torch.float64), rich_model()):
        q = _rand_q(model, batch, seed)
        P, X = fk_soa(model, q, markers=True)
        Pr = kf.fk(model, q)
        assert P.R.shape == Pr.R.shape and P.t.shape == Pr.t.shape
        torch.testing.assert_close(P.R, Pr.R, rtol=0, atol=1e-12)
        torch.testing.assert_close(P.t, Pr.t, rtol=0, atol=1e-12)
        torch.testing.assert_close(X, kf.marker_positions(model, q), rtol=0, atol=1e-12)


def test_soa_gradients_match_fk_for_q_and_every_leaf():
    model = rich_model()
    q = _rand_q(model, (3,), 1)
    leaves, spec = kf._pytree.tree_flatten(model)
    g = torch.Generator().manual_seed(2)

    def loss(fn, q, *lv):
        m = kf._pytree.tree_unflatten(list(lv), spec)
        P, X = fn(m, q)
        w = torch.randn(P.R.shape, generator=torch.Generator().manual_seed(3), dtype=q.dtype)
        return (P.R * w).sum() + (P.t ** 2).sum() + (X * 0.7).sum()

    ref = lambda m, q: (kf.fk(m, q), kf.marker_positions(m, q))  # noqa: E731
    soa = lambda m, q: fk_soa(m, q, markers=True)  # noqa: E731
    args = [q.requires_grad_()] + [t.clone().requires_grad_() for t in leaves]
    g_ref = torch.autograd.grad(loss(ref, *args), args, allow_unused=True)
    g_soa = torch.autograd.grad(loss(soa, *args), args, allow_unused=True)
    for a, b in zip(g_ref, g_soa):
        if a is None:
            assert b is None or torch.all(b == 0)
            continue
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    del g


def test_soa_gradient_against_finite_differences():
    model = rich_model()
    q = _rand_q(model, (), 5).requires_grad_()
    f = lambda q: fk_soa(model, q, markers=True)[1].sum()  # noqa: E731
    assert torch.autograd.gradcheck(lambda q: fk_soa(model, q, markers=True)[1], (q,), eps=1e-6, atol=1e-7)
    assert torch.isfinite(torch.autograd.grad(f(q), q)[0]).all()


def test_compiled_fk_under_torch_func_equals_fk():
    model = kf.models.lower_body("cmu", dtype=torch.float64)
    fast = compile_fk(model)
    q = _rand_q(model, (5,), 7)
    # vmap over frames of a single-frame function
    x_fast = torch.func.vmap(fast.markers)(q)
    torch.testing.assert_close(x_fast, kf.marker_positions(model, q), rtol=0, atol=1e-12)
    # jacfwd / jacrev equal the reference Jacobians
    J = torch.func.jacfwd(fast.markers)(q[0])
    J_ref = torch.func.jacrev(lambda q: kf.marker_positions(model, q))(q[0])
    torch.testing.assert_close(J, J_ref, rtol=1e-10, atol=1e-12)
    g = torch.func.grad(lambda q: fast(q).t.sum())(q[0])
    torch.testing.assert_close(g, torch.func.grad(lambda q: kf.fk(model, q).t.sum())(q[0]))
    # frames-last buffers under a transform: the same layout as the compiled call
    R, t, X = torch.func.vmap(lambda q: fast.frames_last(q[None], markers=True))(q)
    P = kf.fk(model, q)
    torch.testing.assert_close(R[..., 0], P.R, rtol=0, atol=1e-12)
    torch.testing.assert_close(t[..., 0], P.t, rtol=0, atol=1e-12)
    torch.testing.assert_close(X[..., 0], kf.marker_positions(model, q), rtol=0, atol=1e-12)


def test_compiled_rejects_other_topology_and_wrong_width():
    model = kf.models.lower_body("cmu")
    fast = compile_fk(model)
    with pytest.raises(ValueError, match="topology"):
        fast(model.default_q(), model=kf.models.lower_body("pig"))
    with pytest.raises(ValueError, match="coordinates"):
        fast(torch.zeros(3, 5))


def small_model(dtype=torch.float32):
    mb = kf.ModelBuilder("small")
    mb.add_body("a", kf.Joint.free("root", ("r1", "r2", "r3", "x", "y", "z")))
    mb.add_body("b", kf.Joint.pin("j", "a", "k", axis=(0.2, 0.1, 1.0), parent_location=(0, -0.4, 0), parent_orientation=(0.1, 0, 0)))
    mb.add_body("c", kf.Joint.pin("j2", "b", "k2", axis=(0, 0, 1), parent_location=(0, -0.4, 0)))
    mb.add_marker("mk", "b", (0.0, -0.3, 0.02))
    mb.add_marker("mk2", "c", (0.1, -0.1, 0.0))
    return mb.build(dtype=dtype)


def test_compiled_kernel_float32_values_and_gradients():
    """Inductor, leaves-as-arguments form (slow to compile on 2 cores): values + grads."""
    model = small_model()
    model = model.replace(body_scales=torch.full_like(model.body_scales, 1.05))
    fast = compile_fk(model)
    q = _rand_q(model, (64,), 11).requires_grad_()
    offs = model.marker_offsets.clone().requires_grad_()
    w = torch.randn(64, 3, 3, 3, generator=torch.Generator().manual_seed(4))
    for m2 in (model, model.replace(global_scale=torch.tensor(1.3))):  # same compiled code, new leaves
        m2 = m2.replace(marker_offsets=offs)
        (P, X) = fast.poses_and_markers(q, model=m2)
        Pr, Xr = kf.fk(m2, q), kf.marker_positions(m2, q)
        torch.testing.assert_close(P.R, Pr.R, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(P.t, Pr.t, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(X, Xr, rtol=1e-5, atol=1e-6)
        g = torch.autograd.grad((X ** 2).sum() + (P.R * w).sum(), (q, offs))
        g_ref = torch.autograd.grad((Xr ** 2).sum() + (Pr.R * w).sum(), (q, offs))
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not math.isnan(float(P.t.sum()))


def test_frozen_rows_equal_fk_eager():
    """The frozen (constants-baked) row code, run eagerly, equals fk on every joint kind."""
    from kinfunc.compiled import _fk_frozen_impl, _frozen_consts, _plan

    for model in (rich_model(), kf.models.lower_body("opensim", dtype=torch.float64)):
        q = _rand_q(model, (6,), 13)
        R, t, X = _fk_frozen_impl(_plan(model.topology), _frozen_consts(model), model.slot_params, model.coupler_params, q.t(), True)
        P = kf.fk(model, q)
        torch.testing.assert_close(R.permute(3, 0, 1, 2), P.R, rtol=0, atol=1e-12)
        torch.testing.assert_close(t.permute(2, 0, 1), P.t, rtol=0, atol=1e-12)
        torch.testing.assert_close(X.permute(2, 0, 1), kf.marker_positions(model, q), rtol=0, atol=1e-12)


def test_compiled_frozen_float32_values_and_q_gradient():
    model = small_model()
    fast = compile_fk(model)  # no leaf requires grad -> frozen
    q = _rand_q(model, (32,), 17).requires_grad_()
    P, X = fast.poses_and_markers(q)
    Pr, Xr = kf.fk(model, q), kf.marker_positions(model, q)
    torch.testing.assert_close(P.R, Pr.R, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(P.t, Pr.t, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(X, Xr, rtol=1e-5, atol=2e-6)
    g = torch.autograd.grad((X ** 2).sum() + P.R.sum(), q)[0]
    g_ref = torch.autograd.grad((Xr ** 2).sum() + Pr.R.sum(), q)[0]
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)


def test_lean_single_frame_path_equals_fk():
    """The generated straight-line single-frame code (no compile) equals fk."""
    from kinfunc.compiled import _frozen_consts, _lean_function, _plan

    for model in (kf.models.lower_body("pig", dtype=torch.float64), small_model(torch.float64)):
        f = _lean_function(_plan(model.topology), _frozen_consts(model), True)
        B, M = model.topology.n_bodies, model.topology.n_markers
        for seed in range(3):
            q = _rand_q(model, (), seed)
            out = torch.tensor(f(q.tolist()), dtype=torch.float64)
            P = kf.fk(model, q)
            torch.testing.assert_close(out[: 9 * B].view(B, 3, 3), P.R, rtol=0, atol=1e-13)
            torch.testing.assert_close(out[9 * B : 12 * B].view(B, 3), P.t, rtol=0, atol=1e-13)
            torch.testing.assert_close(out[12 * B :].view(M, 3), kf.marker_positions(model, q), rtol=0, atol=1e-13)
    # through the public object: a single frame without grad takes the lean path
    model = kf.models.lower_body("cmu", dtype=torch.float64)
    fast = compile_fk(model)
    q = _rand_q(model, (), 9)
    torch.testing.assert_close(fast.markers(q), kf.marker_positions(model, q), rtol=0, atol=1e-13)
    # the generated frames-last tensor kernel (what the frozen compiled form traces), eagerly
    from kinfunc.compiled import _kernel_function

    for model in (kf.models.lower_body("opensim", dtype=torch.float64), small_model(torch.float64)):
        k = _kernel_function(_plan(model.topology), _frozen_consts(model), True)
        q = _rand_q(model, (7,), 21)
        R, t, X = k(q.t().contiguous(), model.slot_params, model.coupler_params)
        P = kf.fk(model, q)
        torch.testing.assert_close(R.permute(3, 0, 1, 2), P.R, rtol=0, atol=1e-12)
        torch.testing.assert_close(t.permute(2, 0, 1), P.t, rtol=0, atol=1e-12)
        torch.testing.assert_close(X.permute(2, 0, 1), kf.marker_positions(model, q), rtol=0, atol=1e-12)
    # couplers (not supported by the lean generator) -> None, the caller falls back
    assert _lean_function(_plan(rich_model().topology), _frozen_consts(rich_model()), False) is None


def test_compiled_leaves_form_calls_the_chain_custom_op_when_routed(monkeypatch):
    """With the private switch, the leaves form composes the tree through kinfunc::compose_chain
    (what it does on CUDA with Triton; on the CPU the op runs its torch twin): the op is in
    inductor's generated forward and backward code (its fake impl let inductor plan around it),
    and values and gradients (q and model leaves) equal kf.fk."""
    import torch._inductor.config as inductor_config
    from torch._inductor.utils import run_and_get_code

    from kinfunc.kernels import chain

    # without the switch no CPU tensor is routed to the op (the CPU path is the level loop)
    assert chain.chain_op(torch.zeros(1)) is None
    monkeypatch.setattr(chain, "_FORCE_OP", True)
    assert chain.chain_op(torch.zeros(1)) is not None
    model = small_model()
    scales = torch.full_like(model.body_scales, 1.05).requires_grad_()
    model = model.replace(body_scales=scales)
    fast = compile_fk(model)  # a leaf requires grad -> leaves form
    q = _rand_q(model, (16,), 23).requires_grad_()
    w = torch.randn(16, 3, 3, 3, generator=torch.Generator().manual_seed(5))

    def run():
        P, X = fast.poses_and_markers(q)
        g = torch.autograd.grad((X ** 2).sum() + (P.R * w).sum(), (q, scales))
        return P, X, g

    # Inductor 2.13's CPU vectoriser miscompiles the backward of this graph (the frames-first /
    # frames-last transposes around the op; it does so with the op replaced by plain torch code
    # too: wrong q gradients every 16th frame, or heap corruption). The routed graph runs on CUDA
    # only (Triton codegen), so the CPU check compiles it with scalar loops.
    with inductor_config.patch({"cpp.simdlen": 1}):
        (P, X, g), codes = run_and_get_code(run)
    code = "\n".join(codes)
    assert "torch.ops.kinfunc.compose_chain.default" in code
    assert "torch.ops.kinfunc.compose_chain_backward.default" in code
    Pr, Xr = kf.fk(model, q), kf.marker_positions(model, q)
    torch.testing.assert_close(P.R, Pr.R, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(P.t, Pr.t, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(X, Xr, rtol=1e-5, atol=2e-6)
    g_ref = torch.autograd.grad((Xr ** 2).sum() + (Pr.R * w).sum(), (q, scales))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_compiled_frozen_couplers_and_splines_float64():
    """The frozen form on a model with couplers and spline/polynomial slots (evaluated from the
    parameters passed to the generated kernel): values and q gradient equal fk."""
    model = rich_model()
    fast = compile_fk(model)
    assert fast._frozen_for(model) is not None
    q = _rand_q(model, (8,), 29).requires_grad_()
    P, X = fast.poses_and_markers(q)
    Pr, Xr = kf.fk(model, q), kf.marker_positions(model, q)
    torch.testing.assert_close(P.R, Pr.R, rtol=0, atol=1e-12)
    torch.testing.assert_close(P.t, Pr.t, rtol=0, atol=1e-12)
    torch.testing.assert_close(X, Xr, rtol=0, atol=1e-12)
    g = torch.autograd.grad((X ** 2).sum(), q)[0]
    torch.testing.assert_close(g, torch.autograd.grad((Xr ** 2).sum(), q)[0], rtol=1e-10, atol=1e-12)


def test_default_compiles_static_first_then_one_symbolic_graph():
    """dynamic=None (default): the first batch size compiles specialised; a second size compiles
    once more with a symbolic batch size, which serves every later size."""
    from torch._dynamo.utils import counters

    model = small_model()
    fast = compile_fk(model)
    before = counters["stats"]["unique_graphs"]
    for n in (40, 24, 57, 33):
        q = _rand_q(model, (n,), n)
        with torch.no_grad():
            P = fast(q)
        Pr = kf.fk(model, q)
        torch.testing.assert_close(P.R, Pr.R, rtol=1e-5, atol=2e-6)
        torch.testing.assert_close(P.t, Pr.t, rtol=1e-5, atol=2e-6)
        if n == 40:
            assert counters["stats"]["unique_graphs"] - before == 1
    assert counters["stats"]["unique_graphs"] - before == 2


def test_frozen_cpu_kernel_is_one_loop_with_each_sin_cos_once():
    """The default compile of the lower body on the CPU: inductor's code is one loop over the
    frames that evaluates sin and cos of each joint angle once (inductor's default fusion cap
    split it into three loops that recomputed a third of them), and its values equal fk."""
    import re

    from torch._inductor.utils import run_and_get_code

    model = kf.models.lower_body("cmu")
    n_rot = sum(
        1 for g in model.topology.slot_groups if g.key[0] is not F.FnKind.CONSTANT for out in g.outputs if out % 6 < 3
    )
    fast = compile_fk(model)
    q = _rand_q(model, (256,), 31)
    with torch.no_grad():
        P, codes = run_and_get_code(fast, q)
    code = "\n".join(codes)
    assert len(re.findall(r"\b(?:sin|cos)\(", code)) == 2 * n_rot
    assert len(re.findall(r"\bfor\(", code)) == 1
    Pr = kf.fk(model, q)
    torch.testing.assert_close(P.R, Pr.R, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(P.t, Pr.t, rtol=1e-5, atol=2e-6)


def test_compiled_frozen_gait2392_spline_knees_float64():
    """OpenSim's Gait2392 (knee translations are splines of the knee angle): the default
    compiled call equals fk and marker_positions in float64."""
    from .shared import data

    model = kf.io.load_osim(data("opensim-gait2392/subject01_simbody.osim")).to(dtype=torch.float64)
    assert any(g.key[0] is F.FnKind.SPLINE for g in model.topology.slot_groups)
    fast = compile_fk(model)
    q = _rand_q(model, (12,), 37) * 0.5 + model.default_q() * 0.5
    with torch.no_grad():
        P, X = fast.poses_and_markers(q)
    Pr = kf.fk(model, q)
    torch.testing.assert_close(P.R, Pr.R, rtol=0, atol=1e-12)
    torch.testing.assert_close(P.t, Pr.t, rtol=0, atol=1e-12)
    torch.testing.assert_close(X, kf.marker_positions(model, q), rtol=0, atol=1e-12)
