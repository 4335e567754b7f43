"""Whole-trial IK: Jacobians, initialisation, objective terms, solvers, recovery of known answers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import jacrev, vmap

import kinfunc as kf
from kinfunc import functions as F
from kinfunc.ik import CoordinateTask, IKError, IKSetup
from kinfunc.ik.gn import frame_jacobians, frame_jacobians_autodiff
from kinfunc.ik.init import _svd_rotation, initial_q, kabsch, procrustes_rotation, rigid_root_fit, root_coordinates
from kinfunc.ik.jacobian import JacobianPlan, marker_jacobian
from kinfunc.ik.problem import expand_q, frame_residual, objective
from kinfunc.ik.solve import build_problem
from kinfunc.ik.synthetic import gait_motion, perturbed_model, rom_motion, synthetic_trial
from kinfunc.model import Dof, Joint, ModelBuilder

DEG = math.pi / 180
f64 = torch.float64


def chain_model() -> kf.Model:
    """A small model exercising couplers, splines, polynomials, locked and clamped coordinates."""
    mb = ModelBuilder("chain")
    mb.add_body("base", Joint.free("root", ("rx", "ry", "rz", "tx", "ty", "tz"), child_location=(0.01, 0.02, -0.01)))
    mb.add_body(
        "thigh",
        Joint.ball(
            "hip", "base", ("h1", "h2", "h3"), parent_location=(0.05, -0.1, 0.08), parent_orientation=(0.1, -0.2, 0.05)
        ),
    )
    mb.add_body(
        "shank",
        Joint(
            "knee",
            "thigh",
            parent_location=(0.0, -0.4, 0.0),
            child_orientation=(0.1, 0.2, 0.0),
            rotations=(Dof((0, 0, 1), "knee"), Dof((1, 0, 0), "knee_add")),
            translations=(
                Dof((1, 0, 0), "knee", F.Spline((-2, -1, 0, 1), (0.0, 0.01, 0.0, -0.005))),
                Dof((0, 1, 0), "knee", F.Polynomial((0.01, 0.0, 0.002))),
            ),
        ),
    )
    mb.add_coupler("knee_add", "knee", F.Linear(0.2, 0.01))
    mb.add_body("foot", Joint.pin("ankle", "shank", "ankle", (0.1, 0.2, 1.0), parent_location=(0.0, -0.4, 0.0)))
    mb.add_coordinate("ankle", 0.0, (-0.5, 0.5), clamped=True)
    mb.add_coordinate("h3", 0.1, locked=True)
    for name, body, off in [
        ("B1", "base", (0.1, 0.05, 0.1)),
        ("B2", "base", (0.1, 0.05, -0.1)),
        ("B3", "base", (-0.1, 0.07, 0.0)),
        ("T1", "thigh", (0.03, -0.2, 0.06)),
        ("T2", "thigh", (0.0, -0.38, 0.05)),
        ("S1", "shank", (0.03, -0.1, 0.05)),
        ("S2", "shank", (0.0, -0.38, 0.05)),
        ("S3", "shank", (0.02, -0.2, -0.04)),
        ("F1", "foot", (-0.02, -0.03, 0.0)),
        ("F2", "foot", (0.15, -0.05, 0.03)),
        ("F3", "foot", (0.15, -0.05, -0.03)),
    ]:
        mb.add_marker(name, body, off)
    return mb.build(dtype=f64)


def fixed_slot_model() -> kf.Model:
    """Joints with constant rotation slots (non-zero values) before, between and after the
    varying ones, a body whose rotation slots are all constant, and a second slot turning with
    a varying first one: every way the plan folds constant slot factors into the varying ones."""
    C = F.Constant
    mb = ModelBuilder("fixed_slots")
    mb.add_body("base", Joint.free("root", ("rx", "ry", "rz", "tx", "ty", "tz")))
    mb.add_body(
        "a",
        Joint(
            "ja",
            "base",
            parent_location=(0.05, -0.1, 0.02),
            parent_orientation=(0.2, 0.1, -0.3),
            child_orientation=(-0.1, 0.3, 0.2),
            rotations=(Dof((1, 0, 0), None, C(0.3)), Dof((0, 1, 0), "a1"), Dof((0, 0, 1), None, C(-0.2))),
        ),
    )
    mb.add_body(
        "b",
        Joint(
            "jb",
            "a",
            parent_location=(0.0, -0.3, 0.01),
            child_orientation=(0.2, 0.0, 0.1),
            rotations=(Dof((0, 0, 1), "b1"), Dof((1, 0, 0), None, C(0.4)), Dof((0.2, 1, 0), "b2")),
        ),
    )
    mb.add_body(
        "c",
        Joint(
            "jc",
            "b",
            parent_location=(0.0, -0.3, 0.0),
            rotations=(Dof((0, 0, 1), None, C(0.25)), Dof((1, 0, 0), None, C(-0.15)), Dof((0, 1, 0), None, C(0.5))),
            translations=(Dof((1, 0, 0), "c1"),),
        ),
    )
    mb.add_body("d", Joint.ball("jd", "c", ("d1", "d2", "d3"), parent_location=(0.1, 0.0, 0.0), child_orientation=(0.3, -0.2, 0.1)))
    for body in ("base", "a", "b", "c", "d"):
        for k, off in enumerate([(0.1, 0.05, 0.1), (0.1, -0.15, -0.1), (-0.1, -0.07, 0.03)]):
            mb.add_marker(f"{body}{k}", body, off)
    return mb.build(dtype=f64)


def random_q(model, T, seed, spread=0.4):
    g = torch.Generator().manual_seed(seed)
    q = model.default_q() + spread * (torch.rand(T, model.topology.n_coordinates, generator=g, dtype=f64) - 0.5) * 2
    return q


# ---------------------------------------------------------------------------------------
# Jacobians
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["chain", "lower_body", "fixed_slots"])
def test_marker_jacobian_equals_jacrev(which):
    model = {"chain": chain_model, "fixed_slots": fixed_slot_model}.get(which, lambda: kf.models.lower_body("opensim", dtype=f64))()
    model = model.replace(
        body_scales=model.body_scales * torch.linspace(0.9, 1.1, model.topology.n_bodies * 3, dtype=f64).reshape(-1, 3),
        global_scale=torch.tensor(1.05, dtype=f64),
    )
    q = random_q(model, 4, seed=1)
    p, J = marker_jacobian(model, q)
    ref = vmap(jacrev(lambda qq: kf.marker_positions(model, qq)))(q)
    torch.testing.assert_close(p, kf.marker_positions(model, q), rtol=0, atol=1e-12)
    torch.testing.assert_close(J, ref, rtol=0, atol=1e-10)


def test_jacobian_is_differentiable_after_first_use_in_inference_mode():
    """A plan made inside inference mode (as a solve makes them) holds ordinary index tensors:
    it serves a later call that records gradients, and so does everything after a solve."""
    model = chain_model()
    q = random_q(model, 3, seed=4)
    with torch.inference_mode():
        marker_jacobian(model, q)
        plan = JacobianPlan.build(model)
    qq = q.clone().requires_grad_(True)
    (gp,) = torch.autograd.grad(plan.evaluate(model, plan.constants(model), qq).J.square().sum(), qq)
    p, J = marker_jacobian(model, qq)
    (g,) = torch.autograd.grad((J * J).sum(), qq)
    fd = torch.zeros_like(q)
    for k in range(q.shape[-1]):
        e = torch.zeros_like(q)
        e[:, k] = 1e-6
        fd[:, k] = ((marker_jacobian(model, q + e)[1] ** 2).sum((1, 2, 3)) - (marker_jacobian(model, q - e)[1] ** 2).sum((1, 2, 3))) / 2e-6
    torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gp, g, rtol=0, atol=1e-12)


def test_frame_jacobians_equal_jacrev_all_terms():
    """Markers (with gaps), coordinate tasks (incl. a coupled coordinate), limits (violated),
    locked coordinates, global/segment scales and offsets: analytic = jacrev = jacfwd."""
    model = chain_model()
    q = random_q(model, 6, seed=2)
    trial = synthetic_trial(model, q, noise=0.003, gaps=0.2, seed=3)
    tasks = {"knee_add": CoordinateTask(5.0, 0.05), "h1": CoordinateTask(2.0)}
    prob, info = build_problem(
        model,
        [trial],
        ("pose", "global_scale", "segment_scales", "marker_offsets"),
        coordinate_tasks=tasks,
        scale_mode="per_axis",
    )
    Z = q[:, info.free_index].clone()
    ai = prob.free_names.index("ankle")
    Z[:3, ai] = torch.tensor([0.7, -0.8, 0.2], dtype=f64)  # two frames beyond the ankle limit
    th = info.theta0 + 0.01 * torch.randn(
        info.theta0.shape, generator=torch.Generator().manual_seed(0), dtype=f64
    )
    r, Jz, Jt = frame_jacobians(prob, Z, th)
    rr, Jzr, Jtr = frame_jacobians_autodiff(prob, Z, th)
    Jz_rev, Jt_rev = vmap(jacrev(lambda z, t, x, m: frame_residual(prob, z, t, x, m), argnums=(0, 1)))(
        Z, th[prob.theta_index], prob.X, prob.present
    )
    torch.testing.assert_close(r, rr, rtol=0, atol=1e-12)
    torch.testing.assert_close(Jz, Jz_rev, rtol=0, atol=1e-10)
    torch.testing.assert_close(Jt, Jt_rev, rtol=0, atol=1e-10)
    torch.testing.assert_close(Jzr, Jz_rev, rtol=0, atol=1e-10)
    assert Jz[:, :, ai].abs().sum() > 0 and prob.limit_index.numel() == 1
    # the locked coordinate is not a variable and keeps its value
    assert "h3" not in prob.free_names


def test_scale_derivatives_equal_jacrev():
    """Analytic d marker / d body scale factors (joint locations, OpenSim's translation-slot rule,
    offsets) equal jacrev on the built-in model and on the chain model (splines, couplers)."""
    from kinfunc.ik.jacobian import JacobianPlan

    for model in (kf.models.lower_body("opensim", dtype=f64), chain_model()):
        g = torch.Generator().manual_seed(8)
        model = model.replace(body_scales=0.9 + 0.2 * torch.rand(model.body_scales.shape, generator=g, dtype=f64))
        q = random_q(model, 3, seed=9)
        plan = JacobianPlan.build(model)
        out = plan.evaluate(model, plan.constants(model), q, jacobian=False, scales=True)

        def pos(s_body):  # markers as a function of the total body scales
            m = model.replace(global_scale=torch.ones((), dtype=f64), body_scales=s_body)
            return kf.marker_positions(m, q)

        ref = jacrev(pos)(model.global_scale * model.body_scales)  # (T, M, 3, B, 3)
        torch.testing.assert_close(out.dp_ds, ref, rtol=0, atol=1e-12)
        assert ref.abs().amax() > 0.1


def test_frame_jacobians_per_trial_parameters():
    """shared=False (one parameter set per trial): the per-set analytic Jacobians equal forward mode."""
    model = chain_model()
    trials = [synthetic_trial(model, random_q(model, 4, seed=s), noise=0.002, gaps=0.1, seed=s) for s in (1, 2)]
    prob, info = build_problem(
        model, trials, ("pose", "global_scale", "segment_scales", "marker_offsets"), shared=False, scale_mode="per_axis"
    )
    assert prob.n_sets == 2
    Z = torch.cat([random_q(model, 4, seed=s) for s in (1, 2)])[:, info.free_index]
    th = info.theta0 + 0.01 * torch.randn(info.theta0.shape, generator=torch.Generator().manual_seed(3), dtype=f64)
    r, Jz, Jt = frame_jacobians(prob, Z, th)
    rr, Jzr, Jtr = frame_jacobians_autodiff(prob, Z, th)
    torch.testing.assert_close(r, rr, rtol=0, atol=1e-12)
    torch.testing.assert_close(Jz, Jzr, rtol=0, atol=1e-10)
    torch.testing.assert_close(Jt, Jtr, rtol=0, atol=1e-10)


@pytest.mark.parametrize("which", ["chain", "lower_body"])
def test_frame_normal_equations_equal_jacobian_products(which):
    """The marker-moment form of J^T J, J^T r and the cost equals forming the marker Jacobian,
    with gaps, weights, coordinate tasks on a coupled coordinate and violated limits (chain), and
    on OpenSim's lower body (spline-driven knee translations, 3-DOF hips); far from the origin
    (positions of several metres) as in a lab."""
    from kinfunc.ik.gn import frame_normal_equations

    model = chain_model() if which == "chain" else kf.models.lower_body("opensim", dtype=f64)
    q = random_q(model, 6, seed=5)
    q[:, model.topology.coordinate_names.index("tx" if which == "chain" else "pelvis_tx")] += 4.0  # root 4 m along X
    trial = synthetic_trial(model, q, noise=0.004, gaps=0.25, seed=6)
    tasks = {"knee_add": CoordinateTask(5.0, 0.05), "h1": CoordinateTask(2.0)} if which == "chain" else {}
    weights = {n: 1.0 + 0.1 * k for k, n in enumerate(model.marker_names)}
    prob, info = build_problem(model, [trial], coordinate_tasks=tasks, marker_weights=weights)
    Z = q[:, info.free_index].clone()
    if which == "chain":
        Z[:2, prob.free_names.index("ankle")] = torch.tensor([0.7, -0.8], dtype=f64)  # beyond the ankle limit
    r, J, _ = frame_jacobians(prob, Z, None)
    cost, A, g, pos = frame_normal_equations(prob, Z)
    torch.testing.assert_close(pos, kf.marker_positions(prob.model, expand_q(prob, Z)), rtol=0, atol=1e-12)
    torch.testing.assert_close(cost, (r * r).sum(-1), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(A, J.transpose(-1, -2) @ J, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g, (J.transpose(-1, -2) @ r[..., None])[..., 0], rtol=1e-10, atol=1e-12)
    if which == "chain":
        assert prob.limit_index.numel() == 1 and prob.task_index.numel() == 2
    else:
        assert int((prob.plan.ent_rot == 0).sum()) > 2  # knee translations follow the knee angle


def test_frame_normal_equations_float32_close_to_float64():
    """The float32 path agrees with float64 to float32 accuracy."""
    from kinfunc.ik.gn import frame_normal_equations

    model = chain_model()
    q = random_q(model, 5, seed=11)
    trial = synthetic_trial(model, q, noise=0.004, gaps=0.2, seed=12)
    out = {}
    for dtype in (torch.float32, f64):
        prob, info = build_problem(model, [trial], dtype=dtype)
        out[dtype] = frame_normal_equations(prob, q[:, info.free_index].to(dtype))
    for a32, a64 in zip(out[torch.float32], out[f64]):
        assert a32.dtype == torch.float32
        torch.testing.assert_close(a32.double(), a64, rtol=2e-4, atol=2e-6 * float(a64.abs().max()))


@pytest.mark.parametrize("N", [1, 2, 5, 8, 13])
def test_block_tridiagonal_solve_matches_dense(N):
    """Cyclic reduction (odd counts padded) against a dense solve of the same symmetric positive
    definite system; one reduction, two right-hand sides."""
    from kinfunc.ik.gn import BlockTridiagonal

    g = torch.Generator().manual_seed(N)
    n = 6
    D = torch.randn(N, n, n, generator=g, dtype=f64)
    D = D @ D.transpose(-1, -2) + 4 * n * torch.eye(n, dtype=f64)
    U = torch.randn(N, n, n, generator=g, dtype=f64)
    H = torch.zeros(N * n, N * n, dtype=f64)
    for i in range(N):
        H[i * n : (i + 1) * n, i * n : (i + 1) * n] = D[i]
        if i + 1 < N:
            H[i * n : (i + 1) * n, (i + 1) * n : (i + 2) * n] = U[i]
            H[(i + 1) * n : (i + 2) * n, i * n : (i + 1) * n] = U[i].T
    assert bool((torch.linalg.eigvalsh(H) > 0).all())
    system = BlockTridiagonal(D, U)
    for r in (1, 3):
        b = torch.randn(N, n, r, generator=g, dtype=f64)
        ref = torch.linalg.solve(H, b.reshape(N * n, r)).reshape(N, n, r)
        torch.testing.assert_close(system.solve(b), ref, rtol=1e-10, atol=1e-12)


def test_objective_gradient_matches_finite_differences():
    model = chain_model()
    q = random_q(model, 5, seed=4)
    trial = synthetic_trial(model, q, noise=0.004, gaps=0.1, seed=5)
    prob, info = build_problem(
        model,
        [trial],
        ("pose", "segment_scales", "marker_offsets"),
        smoothness=0.5,
        coordinate_tasks={"knee_add": CoordinateTask(3.0, 0.0)},
    )
    Z = (q[:, info.free_index] + 0.05).requires_grad_(True)
    th = (info.theta0 + 0.02).requires_grad_(True)
    f = objective(prob, Z, th)
    gZ, gt = torch.autograd.grad(f, (Z, th))
    eps = 1e-6
    for t, c in [(0, 0), (2, 5), (4, prob.n_free - 1)]:
        dZ = torch.zeros_like(Z)
        dZ[t, c] = eps
        fd = (objective(prob, Z.detach() + dZ, th.detach()) - objective(prob, Z.detach() - dZ, th.detach())) / (2 * eps)
        assert abs(float(fd) - float(gZ[t, c])) < 1e-6 * max(1.0, abs(float(fd)))
    for k in [0, prob.n_theta // 2, prob.n_theta - 1]:
        dt = torch.zeros_like(th)
        dt[0, k] = eps
        fd = (objective(prob, Z.detach(), th.detach() + dt) - objective(prob, Z.detach(), th.detach() - dt)) / (2 * eps)
        assert abs(float(fd) - float(gt[0, k])) < 1e-6 * max(1.0, abs(float(fd)))


# ---------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000))
def test_kabsch_recovers_rigid_transform(seed):
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(6, 3, generator=g, dtype=f64) * 0.1
    R = kf.transforms.rotvec_to_matrix(torch.randn(3, generator=g, dtype=f64) * 2)
    t = torch.randn(3, generator=g, dtype=f64)
    X = P @ R.T + t
    w = torch.tensor([1, 1, 0, 1, 0.5, 1], dtype=f64)
    X[2] = 1e3  # ignored (weight 0)
    Rf, tf_, ok = kabsch(P, X, w)
    assert bool(ok)
    torch.testing.assert_close(Rf, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(tf_, t, atol=1e-10, rtol=0)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["float64", "float32"]))
def test_procrustes_rotation_is_the_best_proper_rotation(seed, dtype):
    """The SVD-free path equals the SVD's optimum on every kind of cross-covariance: points in
    3D, two points about a centre (rank 2), collinear points (rank 1), reflections and zeros."""
    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(seed)
    n = 64
    P = torch.randn(n, 5, 3, generator=g, dtype=f64)
    R = kf.transforms.rotvec_to_matrix(torch.randn(n, 3, generator=g, dtype=f64) * 2)
    X = P @ R.transpose(-1, -2) + 0.05 * torch.randn(n, 5, 3, generator=g, dtype=f64)
    w = torch.ones(n, 5, dtype=f64)
    w[8:16, 2:] = 0  # two points
    P[16:24] = P[16:24, :1] * torch.rand(1, 5, 1, generator=g, dtype=f64)  # collinear
    X[24:32] = -X[24:32]  # best fit by a reflection: must stay a rotation
    w[32:34] = 0  # nothing
    iso = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1], [0, 0, 0]], dtype=f64)  # tetrahedron
    P[34:40] = iso
    X[34:40] = -(iso @ R[34:40].transpose(-1, -2))  # a reflection of an isotropic cloud
    H = ((P * w[..., None]).transpose(-1, -2) @ X).to(dt)
    Rf = procrustes_rotation(H)
    Rs = _svd_rotation(H.double())
    eye = torch.eye(3, dtype=f64)
    assert float((Rf.double().transpose(-1, -2) @ Rf.double() - eye).abs().max()) < (1e-10 if dtype == "float64" else 1e-5)
    assert float(torch.linalg.det(Rf.double()).min()) > 0
    gain = lambda Rm: (Rm * H.double().transpose(-1, -2)).sum((-1, -2))  # noqa: E731  tr(R H)
    loss = (gain(Rs) - gain(Rf.double())) / H.double().flatten(-2).norm(dim=-1).clamp_min(1e-30)
    assert float(loss.max()) < (1e-12 if dtype == "float64" else 1e-5)


def test_root_coordinates_roundtrip():
    model = kf.models.lower_body("cmu", dtype=f64)
    q = gait_motion(model, 40, heading=2.5)  # walking nearly backwards: large pelvis yaw
    poses = kf.fk(model, q)
    qr = root_coordinates(model, poses.R[:, 0], poses.t[:, 0], model.default_q())
    d = qr[:, :6] - q[:, :6]
    d[:, :3] = torch.remainder(d[:, :3] + math.pi, 2 * math.pi) - math.pi
    assert float(d.abs().max()) < 1e-9


def test_planar_root_initial_fit_is_exact():
    """A planar pelvis (tilt about Z, translations X and Y; the other slots constant, as in
    OpenSim's Gait10dof) gets its three coordinates from the rigid fit in closed form."""
    mb = ModelBuilder("planar")
    mb.add_body(
        "pelvis",
        Joint(
            "ground_pelvis",
            "ground",
            rotations=(Dof((0, 0, 1), "tilt"), Dof((1, 0, 0)), Dof((0, 1, 0))),
            translations=(Dof((1, 0, 0), "tx"), Dof((0, 1, 0), "ty"), Dof((0, 0, 1))),
        ),
    )
    mb.add_body("thigh", Joint.pin("hip", "pelvis", "hip", parent_location=(-0.07, -0.07, 0.08)))
    for name, body, off in [
        ("P1", "pelvis", (0.02, 0.03, 0.13)),
        ("P2", "pelvis", (0.02, 0.03, -0.13)),
        ("P3", "pelvis", (-0.15, 0.04, 0.0)),
        ("T1", "thigh", (0.03, -0.2, 0.06)),
    ]:
        mb.add_marker(name, body, off)
    model = mb.build(dtype=f64)
    T = 12
    q = torch.zeros(T, 4, dtype=f64)
    q[:, model.topology.coordinate_index("tilt")] = torch.linspace(-0.4, 0.3, T, dtype=f64)
    q[:, model.topology.coordinate_index("tx")] = torch.linspace(0.0, 1.5, T, dtype=f64)
    q[:, model.topology.coordinate_index("ty")] = 0.9 + 0.02 * torch.sin(torch.arange(T, dtype=f64))
    q[:, model.topology.coordinate_index("hip")] = 0.5
    x = kf.marker_positions(model, q)
    q0 = initial_q(model, x, torch.ones(x.shape[:2], dtype=f64), model.default_q())
    root = [model.topology.coordinate_index(n) for n in ("tilt", "tx", "ty")]
    torch.testing.assert_close(q0[:, root], q[:, root], atol=1e-10, rtol=0)
    assert float(q0[:, model.topology.coordinate_index("hip")].abs().max()) == 0.0  # others stay at defaults


def test_initial_root_fit_with_missing_pelvis_markers():
    """Frames with < 3 pelvis markers borrow the nearest good frame's rotation; nothing sequential."""
    model = kf.models.lower_body("cmu", dtype=f64)
    q = gait_motion(model, 60, heading=1.0)
    trial = synthetic_trial(model, q, noise=0.0)
    x = trial.xyz.clone()
    pelvis = [model.marker_names.index(n) for n in ("RFWT", "LFWT", "RBWT", "LBWT")]
    x[10:14, pelvis[:3]] = float("nan")  # one pelvis marker left
    x[30, pelvis] = float("nan")  # none left
    x[0:3, pelvis[1:]] = float("nan")  # start of the trial: no earlier good frame
    present = torch.isfinite(x).all(-1).to(f64)
    R, t = rigid_root_fit(model, torch.nan_to_num(x), present, model.default_q())
    poses = kf.fk(model, q)
    ang = kf.transforms.matrix_to_rotvec(R.transpose(-1, -2) @ poses.R[:, 0]).norm(dim=-1)
    good = torch.ones(60, dtype=torch.bool)
    good[[0, 1, 2, 10, 11, 12, 13, 30]] = False
    assert float(ang[good].max()) < 1e-9
    assert float(ang[~good].max()) < 10 * DEG  # neighbour's rotation: motion between frames only
    dt = (t - poses.t[:, 0]).norm(dim=-1)
    assert float(dt[[0, 1, 2, 10, 11, 12, 13]].max()) < 0.01  # placed by the pelvis markers it has
    assert float(dt[30]) < 0.15  # no pelvis marker: centroid of the leg markers at the default pose
    assert torch.isfinite(R).all() and torch.isfinite(t).all()


# ---------------------------------------------------------------------------------------
# Solving
# ---------------------------------------------------------------------------------------
def test_exact_pose_recovery_noise_free():
    model = kf.models.lower_body("cmu", dtype=f64)
    q = gait_motion(model, 40, heading=0.7)
    trial = synthetic_trial(model, q)
    res = kf.ik.solve(model, trial)
    assert res.converged and res.solver == "gn"
    assert float((res.q - q).abs().max()) < 1e-6
    assert float(res.marker_rms.max()) < 1e-7
    assert res.q.shape == (40, 18) and res.marker_error.shape == (40, 18) and res.time.shape == (40,)


def test_frame_solver_reports_its_own_poses_and_converges():
    """Independent frames (noise, gaps, no smoothness): last steps are taken unchecked and
    verified at the end, so the reported objective, marker errors and history must belong to
    the returned poses, and stopping early must not cost accuracy against a much tighter solve."""
    model = kf.models.lower_body("cmu", dtype=f64)
    q = gait_motion(model, 60)
    trial = synthetic_trial(model, q, noise=0.005, gaps=0.2, seed=3)
    kw = dict(limits="none", start="root", restarts=False)  # the frame solver alone (the start has its own tests)
    res = kf.ik.solve(model, trial, **kw)
    assert res.converged and res.solver == "gn"
    assert res.objective == pytest.approx(kf.ik.setup_objective(model, IKSetup(), trial, res.time, res.q), rel=1e-12)
    d = torch.linalg.vector_norm(kf.marker_positions(model, res.q) - trial.xyz, dim=-1)
    torch.testing.assert_close(res.marker_error, d, rtol=0, atol=1e-12, equal_nan=True)
    assert all(b <= a * (1 + 1e-12) for a, b in zip(res.history, res.history[1:]))  # (sums regrouped as frames leave)
    assert res.history[-1] == pytest.approx(res.objective, rel=1e-15)
    tight = kf.ik.solve(model, trial, gn_options=kf.ik.GNOptions(ftol=1e-14, max_iter=200), **kw)
    assert tight.objective <= res.objective <= tight.objective * (1 + 1e-7)


def test_frame_solver_rejects_last_steps_that_do_not_lower_the_cost(monkeypatch):
    """When the end-of-solve check finds a last step worse (forced here), the frame keeps its
    previous pose, cost and marker positions (with a coordinate task, whose targets follow the
    frames)."""
    import kinfunc.ik.gn as gn

    model = kf.models.lower_body("cmu", dtype=f64)
    q = gait_motion(model, 30)
    trial = synthetic_trial(model, q, noise=0.005, seed=8)
    setup = IKSetup(coordinate_tasks={"hip_rotation_l": CoordinateTask(0.5, 0.05)})
    ref = kf.ik.solve(model, trial, setup=setup, limits="none")
    calls = []
    checked = gn.frame_costs

    def worse(problem, Z, consts=None, targets=None, task_value=None):  # the check over all frames reports every step as worse
        cost, pos = checked(problem, Z, consts, targets, task_value)
        calls.append(Z.shape[0])
        return (cost + 1.0 if len(calls) == 1 else cost), pos

    monkeypatch.setattr(gn, "frame_costs", worse)
    res = kf.ik.solve(model, trial, setup=setup, limits="none")
    assert calls and calls[0] == 30  # the end-of-solve check over every frame ran (and was forced to reject)
    assert ref.objective <= res.objective  # the steps it threw away were improvements
    assert res.objective == pytest.approx(kf.ik.setup_objective(model, setup, trial, res.time, res.q), rel=1e-12)
    d = torch.linalg.vector_norm(kf.marker_positions(model, res.q) - trial.xyz, dim=-1)
    torch.testing.assert_close(res.marker_error, d, rtol=0, atol=1e-12)


def test_pose_recovery_with_noise_and_gaps():
    """5 mm noise per axis, 20 % gaps, CMU markers: ≤ 1° RMS with temporal smoothness."""
    model = kf.models.lower_body("cmu", dtype=f64)
    q = gait_motion(model, 150)
    trial = synthetic_trial(model, q, noise=0.005, gaps=0.2, seed=1)
    res = kf.ik.solve(model, trial, smoothness=1.0)
    err = (res.q - q)[:, 6:]
    assert float(err.pow(2).mean().sqrt()) < 1.0 * DEG
    assert torch.isnan(res.marker_error).float().mean().item() == pytest.approx(0.2, abs=0.02)
    assert float(res.coverage.min()) > 0.7 and float(res.coverage.max()) <= 1.0
    rms = res.marker_rms
    assert 0.004 < float(rms.mean()) < 0.012  # about the noise level (5 mm/axis -> 8.7 mm/marker)


def test_smoothness_pose_fit_is_a_minimum_of_the_whole_objective():
    """Poses coupled by smoothness (frame blocks from the marker moments, banded solve): L-BFGS
    on the full objective, started from GN's answer, finds nothing lower, and the reported
    objective is the objective at the returned poses."""
    model = kf.models.lower_body("cmu", dtype=f64)
    q = gait_motion(model, 30)
    trial = synthetic_trial(model, q, noise=0.005, gaps=0.1, seed=5)
    kw = dict(smoothness=0.5, coordinate_tasks={"hip_rotation_l": CoordinateTask(2.0, 0.05)})
    gn_res = kf.ik.solve(model, trial, **kw)
    assert gn_res.converged and gn_res.solver == "gn"
    prob, info = build_problem(model, [trial], **kw)
    assert gn_res.objective == pytest.approx(float(objective(prob, gn_res.q[:, info.free_index], None)), rel=1e-10)
    lb = kf.ik.solve(model, trial, solver="lbfgs", init=gn_res.q, **kw)
    assert lb.objective >= gn_res.objective * (1 - 1e-7)


def test_shape_recovery_scales_offsets():
    """Known scales and offsets (8 mm scatter) recovered from noisy (5 mm/axis), gappy (20 %) markers.

    One subject, two trials sharing the parameters (a walk and a range-of-motion trial, as a
    lab records them: gait alone barely moves the hips off the sagittal plane, which leaves
    hip-centre placement, i.e. pelvis scale, poorly determined). Identifiable here: uniform
    scales of pelvis, femurs, tibias (they move joint centres) and offsets of markers on those
    bodies (pelvis markers in X and Z only, as in the seed paper). Foot offsets are frozen:
    with a two-hinge foot, a rigid rotation of all foot markers about the ankle trades off
    against the ankle/subtalar angles.
    """
    model = kf.models.lower_body("opensim", dtype=f64)
    topo = model.topology
    foot = {i for i, b in enumerate(topo.marker_bodies) if topo.body_names[b].startswith(("calcn", "talus"))}
    mask = torch.tensor(
        [[i not in foot, (b != 0) and (i not in foot), i not in foot] for i, b in enumerate(topo.marker_bodies)]
    )
    scales = {"pelvis": 1.04, "femur_r": 0.95, "femur_l": 0.96, "tibia_r": 1.06, "tibia_l": 1.05}
    truth = perturbed_model(model, scales, offset_sigma=0.008, seed=3, offset_axes=mask)
    q_walk, q_rom = gait_motion(model, 150), rom_motion(model, 300)
    walk = synthetic_trial(truth, q_walk, noise=0.005, gaps=0.2, seed=1)
    rom = synthetic_trial(truth, q_rom, noise=0.005, gaps=0.2, seed=2)
    axes = {n: (False, False, False) for i, n in enumerate(topo.marker_names) if i in foot}
    res, res_rom = kf.ik.solve(
        model,
        [walk, rom],
        fit=("pose", "segment_scales", "marker_offsets"),
        smoothness=1.0,
        scale_bodies=list(scales),
        offset_axes=axes,
        scale_weight=1e-3,
        offset_weight=1e-2,
    )
    assert res.converged and res.model is res_rom.model
    bi = [topo.body_index(b) for b in scales]
    got = res.model.body_scales[bi, 0]
    want = torch.tensor(list(scales.values()), dtype=f64)
    assert float(((got - want) / want).abs().max()) < 0.01
    oe = (res.model.marker_offsets - truth.marker_offsets).norm(dim=-1)
    assert float(oe.max()) < 0.003
    assert float((res.q - q_walk)[:, 6:].pow(2).mean().sqrt()) < 1.0 * DEG
    assert float((res_rom.q - q_rom)[:, 6:].pow(2).mean().sqrt()) < 1.0 * DEG


def test_gn_and_lbfgs_agree():
    model = kf.models.lower_body("opensim", dtype=f64)
    q = gait_motion(model, 12)
    truth = perturbed_model(model, {"femur_r": 0.97, "tibia_r": 1.03}, offset_sigma=0.005, seed=2)
    trial = synthetic_trial(truth, q, noise=0.003, gaps=0.1, seed=4)
    kw = dict(
        fit=("pose", "segment_scales"),
        scale_bodies=["femur_r", "tibia_r"],
        smoothness=0.1,
        coordinate_tasks={"subtalar_angle_r": CoordinateTask(0.01, 0.0)},
    )
    a = kf.ik.solve(model, trial, solver="gn", **kw)
    b = kf.ik.solve(model, trial, solver="lbfgs", **kw)
    assert abs(a.objective - b.objective) <= 1e-5 * a.objective
    assert float((a.q - b.q).abs().max()) < 0.2 * DEG
    torch.testing.assert_close(a.model.body_scales, b.model.body_scales, atol=2e-3, rtol=0)


def test_limits_locked_and_coordinate_tasks():
    model = kf.models.lower_body("cmu", dtype=f64)
    topo = model.topology
    ki = topo.coordinate_index("knee_angle_r")
    si = topo.coordinate_index("subtalar_angle_l")
    # lock subtalar_l at 5 degrees
    locked = list(topo.coordinate_locked)
    locked[si] = True
    defaults = list(topo.coordinate_defaults)
    defaults[si] = 5 * DEG
    lmodel = model.replace(
        topology=type(topo)(
            **{**topo.__dict__, "coordinate_locked": tuple(locked), "coordinate_defaults": tuple(defaults)}
        )
    )
    q = gait_motion(model, 8)
    q[:, ki] = 25 * DEG  # hyperextended beyond the 10 degree limit
    trial = synthetic_trial(model, q)
    tasks = {"hip_rotation_l": CoordinateTask(1e3, 0.1)}
    for solver in ("gn", "lbfgs"):
        res = kf.ik.solve(
            lmodel, trial, solver=solver, coordinate_tasks=tasks, max_iter=400 if solver == "lbfgs" else None
        )
        assert float(res.q[:, ki].max()) <= 10 * DEG + 1e-12
        assert float(res.q[:, ki].min()) > 5 * DEG  # pushed onto the limit, not elsewhere
        assert torch.all(res.q[:, si] == 5 * DEG)
        hr = res.q[:, topo.coordinate_index("hip_rotation_l")]
        assert float((hr - 0.1).abs().max()) < 0.02  # task pulls hard toward 0.1 rad
    res = kf.ik.solve(lmodel, trial, limits="none")
    assert float(res.q[:, ki].max()) > 20 * DEG


def test_marker_matching_is_reported_and_setup_applies():
    model = kf.models.lower_body("cmu", dtype=f64)
    q = gait_motion(model, 10)
    trial = synthetic_trial(model, q)
    keep = [n for n in trial.names if n != "RMT5"]
    trial = trial.select(keep)
    extra = kf.MarkerTrial(
        names=trial.names + ("C7",), xyz=torch.cat((trial.xyz, trial.xyz[:, :1]), 1), rate=trial.rate, time=trial.time
    )
    setup = IKSetup(
        marker_weights={n: (10.0 if n.endswith("WT") else 1.0) for n in model.marker_names if n != "LMT5"},
        coordinate_tasks={"subtalar_angle_r": CoordinateTask(1.0, 0.0)},
        time_range=(0.02, 0.06),
    )
    res = kf.ik.solve(model, extra, setup=setup)
    assert "C7" in res.unused_trial_markers
    assert "RMT5" in res.missing_model_markers and "LMT5" in res.missing_model_markers
    assert "RMT5" not in res.marker_names and "LMT5" not in res.marker_names and len(res.marker_names) == 16
    assert res.q.shape[0] == 5 and float(res.time[0]) == pytest.approx(0.02)
    with pytest.raises(IKError, match="no such coordinate"):
        kf.ik.solve(model, extra, coordinate_tasks={"elbow": CoordinateTask(1.0)})
    with pytest.raises(IKError, match="unknown group"):
        kf.ik.solve(model, extra, fit=("pose", "shape"))
    none = kf.MarkerTrial(names=("A", "B"), xyz=torch.zeros(3, 2, 3, dtype=f64), rate=1.0, time=torch.arange(3.0))
    with pytest.raises(IKError, match="no marker of the model"):
        kf.ik.solve(model, none)


def test_multi_trial_shared_parameters_and_batch():
    model = kf.models.lower_body("cmu", dtype=f64)
    truth = perturbed_model(model, {"femur_r": 0.95, "femur_l": 0.95, "tibia_r": 1.05, "tibia_l": 1.05})
    qa = gait_motion(model, 30)
    qb = gait_motion(model, 20, heading=1.0, cadence=0.8)
    ta = synthetic_trial(truth, qa, gaps=0.1, seed=1)
    tb = synthetic_trial(truth, qb, gaps=0.1, seed=2)
    fit = ("pose", "segment_scales")
    kw = dict(scale_bodies=["femur_r", "femur_l", "tibia_r", "tibia_l"], symmetric=True, scale_weight=1e-4)
    ra, rb = kf.ik.solve(model, [ta, tb], fit=fit, **kw)
    assert ra.model is rb.model or torch.equal(ra.model.body_scales, rb.model.body_scales)
    fi = model.topology.body_index("femur_l")
    assert abs(float(ra.model.body_scales[fi, 0]) - 0.95) < 1e-4  # symmetric group: shared with femur_r
    assert float((ra.q - qa).abs().max()) < 1e-4 and float((rb.q - qb).abs().max()) < 1e-4
    # a batch of independent subjects in one call: per-trial parameters
    other = perturbed_model(model, {"femur_r": 1.05, "femur_l": 1.05, "tibia_r": 0.97, "tibia_l": 0.97})
    tc = synthetic_trial(other, qb, gaps=0.1, seed=3)
    r1, r2 = kf.ik.solve(model, [ta, tc], fit=fit, shared=False, **kw)
    assert abs(float(r1.model.body_scales[fi, 0]) - 0.95) < 1e-3
    assert abs(float(r2.model.body_scales[fi, 0]) - 1.05) < 1e-3
    # pose-only batch equals solving each trial alone
    s1, s2 = kf.ik.solve(model, [ta, tb])
    torch.testing.assert_close(s2.q, kf.ik.solve(model, tb).q, atol=1e-7, rtol=0)


def test_shape_only_with_known_poses():
    """fit without "pose": poses stay at ``init``; only the named groups move."""
    model = kf.models.lower_body("cmu", dtype=f64)
    truth = perturbed_model(model, {"femur_r": 0.96, "tibia_r": 1.04})
    q = gait_motion(model, 30)
    trial = synthetic_trial(truth, q, gaps=0.1, seed=5)
    res = kf.ik.solve(
        model, trial, fit=("segment_scales",), init=q, scale_bodies=["femur_r", "tibia_r"], scale_weight=1e-6
    )
    assert torch.equal(res.q, q)
    got = res.model.body_scales[[model.topology.body_index("femur_r"), model.topology.body_index("tibia_r")], 0]
    torch.testing.assert_close(got, torch.tensor([0.96, 1.04], dtype=f64), atol=1e-4, rtol=0)
    torch.testing.assert_close(res.model.marker_offsets, model.marker_offsets)  # frozen


def test_jacobian_plan_column_subsets_and_couplers():
    """A plan for some coordinates gives exactly those columns of jacrev, with couplers feeding
    several slots, and positions equal to FK."""
    from kinfunc.ik.jacobian import JacobianPlan

    mb = ModelBuilder("coupled")
    mb.add_body("a", Joint.pin("j1", "ground", "x"))
    mb.add_body("b", Joint("j2", "a", rotations=(Dof((0, 0, 1), "y", F.Linear(2.0, 0.1)),),
                           translations=(Dof((1, 0, 0), "y", F.Spline((-1, 0, 1, 2), (0.0, 0.02, 0.01, -0.01))),)))
    mb.add_body("c", Joint.pin("j3", "b", "z", (0.3, 1.0, 0.2), parent_location=(0.2, 0.0, 0.1)))
    mb.add_coupler("y", "x", F.Linear(-0.5, 0.2))
    mb.add_marker("m", "b", (0.1, 0.0, 0.0))
    mb.add_marker("n", "c", (0.1, 0.05, 0.0))
    for model in (mb.build(dtype=f64), chain_model()):
        q = random_q(model, 5, seed=3)
        ref = vmap(jacrev(lambda qq: kf.marker_positions(model, qq)))(q)
        C = model.topology.n_coordinates
        for cols in (list(range(C)), list(range(C))[::-2]):
            plan = JacobianPlan.build(model, cols)
            out = plan.evaluate(model, plan.constants(model), q)
            torch.testing.assert_close(out.p, kf.marker_positions(model, q), atol=1e-12, rtol=0)
            torch.testing.assert_close(out.J, ref[..., cols], atol=1e-10, rtol=0)
        assert ref.abs().amax() > 0.01

def test_closed_form_slot_derivatives_match_forward_mode():
    """Splines, polynomials, couplers: closed-form ``dv/dq`` equals ``vmap(jacfwd)`` in float64."""
    from kinfunc.fk import full_coordinates
    from kinfunc.ik.jacobian import full_coordinate_derivatives, slot_derivatives, slot_derivatives_autodiff

    model = chain_model()
    g = torch.Generator().manual_seed(4)
    q = model.default_q()[None] + 0.6 * torch.randn(7, model.topology.n_coordinates, generator=g, dtype=f64)
    torch.testing.assert_close(slot_derivatives(model, q), slot_derivatives_autodiff(model, q), atol=1e-12, rtol=1e-10)
    ref = vmap(jacrev(lambda qq: full_coordinates(model, qq)))(q)
    torch.testing.assert_close(full_coordinate_derivatives(model, q), ref, atol=1e-12, rtol=1e-10)


def _write_coordinate_file(path, time, columns, in_degrees=True):
    """A minimal OpenSim .mot: ``columns`` name -> values (rad / m) at ``time``."""
    names = list(columns)
    rows = [
        "\t".join([f"{t:.8f}"] + [f"{(math.degrees(columns[n][k]) if in_degrees else columns[n][k]):.10f}" for n in names])
        for k, t in enumerate(time)
    ]
    head = [path.stem, "version=1", f"nRows={len(rows)}", f"nColumns={len(names) + 1}", f"inDegrees={'yes' if in_degrees else 'no'}", "endheader"]
    path.write_text("\n".join(head + ["\t".join(["time"] + names)] + rows) + "\n")
    return str(path)


def test_from_file_coordinate_tasks_follow_the_file(tmp_path):
    """OpenSim's value_type from_file: per-frame targets from the setup's coordinate file (degrees,
    coarser and wider in time than the trial), interpolated at the trial's times; a heavy task
    pulls the knee onto them, with and without smoothness, and the objective agrees with
    setup_objective's."""
    import numpy as np

    model = kf.models.lower_body("cmu", dtype=f64)
    q = gait_motion(model, 40)
    trial = synthetic_trial(model, q, noise=0.003, seed=2)
    t = trial.time.numpy()
    tf = np.linspace(t[0] - 0.02, t[-1] + 0.02, 17)
    knee = -0.4 - 0.3 * np.sin(2 * np.pi * tf / (tf[-1] - tf[0]))
    path = _write_coordinate_file(tmp_path / "coords.mot", tf, {"knee_angle_r": knee, "hip_flexion_r": 0.0 * tf})
    setup = IKSetup(coordinate_tasks={"knee_angle_r": CoordinateTask(1e4, None, from_file=True)},
                    coordinate_table=kf.io.read_coordinate_table(path))
    expected = torch.tensor(np.interp(t, tf, knee), dtype=f64)
    prob, _ = build_problem(model, [trial], setup=setup, limits="none")
    torch.testing.assert_close(prob.task_value[:, 0], expected, rtol=0, atol=1e-9)
    k = model.coordinate_names.index("knee_angle_r")
    for kw in ({}, {"smoothness": 0.1}):
        res = kf.ik.solve(model, trial, setup=setup, limits="none", **kw)
        assert float((res.q[:, k] - expected).abs().max()) < 2e-3
        if not kw:
            assert res.objective == pytest.approx(kf.ik.setup_objective(model, setup, trial, res.time, res.q), rel=1e-9)
    free = kf.ik.solve(model, trial, limits="none")  # without the task the knee follows the markers
    assert float((free.q[:, k] - expected).abs().max()) > 0.1


def test_from_file_coordinate_task_errors_name_the_fix(tmp_path):
    model = kf.models.lower_body("cmu", dtype=f64)
    trial = synthetic_trial(model, gait_motion(model, 6), seed=0)
    t = trial.time.numpy()
    task = {"knee_angle_r": CoordinateTask(1.0, None, from_file=True)}
    table = lambda p, tt, cols: kf.io.read_coordinate_table(_write_coordinate_file(p, tt, cols))  # noqa: E731
    cases = [
        (IKSetup(coordinate_tasks=task), "kf.io.read_coordinate_table"),
        (IKSetup(coordinate_tasks=task, coordinate_file="c.mot"), "c.mot is named but not read"),
        (IKSetup(coordinate_tasks=task, coordinate_table=table(tmp_path / "a.mot", t, {"hip_flexion_r": 0 * t})), "no column"),
        (IKSetup(coordinate_tasks=task, coordinate_table=table(tmp_path / "b.mot", t[2:], {"knee_angle_r": 0 * t[2:]})), "covers"),
    ]
    for setup, match in cases:
        with pytest.raises(IKError, match=match):
            kf.ik.solve(model, trial, setup=setup)


def test_prepared_kinematics_equal_fresh_ones_and_are_never_stale():
    """Plans and constants are values: a plan's constants from the model's prepared kinematics
    (shared by every plan of a solve) equal those computed afresh; a solve with kinematics
    prepared once equals one without; after an in-place change of a model tensor the fresh path
    sees it at once and prepared kinematics are refused (nothing is kept behind the caller's back)."""
    from kinfunc.ik.jacobian import ModelKinematics

    model = chain_model()
    q = random_q(model, 4, seed=2)
    kin = ModelKinematics(model)
    for cols in ([0, 2, 4], [1], None, ()):
        plan = kin.plan(cols)
        assert kin.plan(cols) is plan  # held by the explicit value
        c_kin, c_new = plan.constants(model, kin), JacobianPlan.build(model, cols).constants(model)
        for a, b in zip(c_kin, c_new):
            for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
                torch.testing.assert_close(x, y, rtol=0, atol=0)
        fa, fb = plan.evaluate(model, c_kin, q, jacobian=bool(plan.columns)), plan.evaluate(model, c_new, q, jacobian=bool(plan.columns))
        torch.testing.assert_close(fa.p, fb.p, rtol=0, atol=0)
    sub = model.with_markers(model.marker_names[:3])  # same joints, other markers: shares the joint part
    ks = kin.for_model(sub)
    torch.testing.assert_close(ks.plan().constants(sub, ks).off, JacobianPlan.build(sub).constants(sub).off, rtol=0, atol=0)
    with pytest.raises(ValueError, match="another model"):
        JacobianPlan.build(sub).constants(sub, kin)
    # whole solves: prepared once and reused = fresh each time
    x = kf.marker_positions(model, q)
    trial = kf.MarkerTrial(names=model.marker_names, xyz=x, rate=100.0, time=torch.arange(4.0) / 100)
    prepared = kf.ik.prepare(model)
    r0 = kf.ik.solve(model, trial)
    for _ in range(2):
        r1 = kf.ik.solve(model, trial, kinematics=prepared)
        torch.testing.assert_close(r1.q, r0.q, rtol=0, atol=0)
    # an in-place change is seen by the next solve, and prepared kinematics are refused
    before = JacobianPlan.build(model).constants(model).tc.clone()
    with torch.no_grad():
        model.child_location[1, 0] += 0.01
    assert not torch.equal(JacobianPlan.build(model).constants(model).tc, before)
    with pytest.raises(ValueError, match="changed in place"):
        kf.ik.solve(model, trial, kinematics=prepared)
    r2 = kf.ik.solve(model, trial)  # reported errors are those of the changed model at its poses
    err = torch.linalg.vector_norm(kf.marker_positions(model, r2.q) - x, dim=-1)
    torch.testing.assert_close(r2.marker_error, err, rtol=0, atol=1e-12)
    assert float(r2.marker_error.max()) > 1e-4  # the moved joint no longer fits the data exactly
    with pytest.raises(ValueError, match="another model"):
        kf.ik.solve(model.to(dtype=torch.float32), trial, kinematics=kf.ik.prepare(model), dtype=torch.float32)
    # differentiable without prepared kinematics
    loc = model.parent_location.clone().requires_grad_(True)
    m2 = model.replace(parent_location=loc)
    c3 = JacobianPlan.build(m2).constants(m2)
    assert c3.tp.requires_grad
    c3.tp.sum().backward()
    assert loc.grad is not None and float(loc.grad.abs().sum()) > 0


def test_no_module_keeps_tensors_after_a_solve():
    """Nothing derived from a model outlives the solve in a module: no lru_cache of any kinfunc
    module holds a tensor afterwards, and no module-level value (or container) is or holds one."""
    import functools
    import sys

    model = chain_model()
    q = random_q(model, 3, seed=5)
    trial = kf.MarkerTrial(names=model.marker_names, xyz=kf.marker_positions(model, q), rate=100.0, time=torch.arange(3.0) / 100)
    kf.ik.solve(model, trial)

    import gc
    import types

    def holds_tensor(root, depth=6) -> bool:
        """Whether a tensor is reachable from ``root`` within ``depth`` references (not through
        classes, modules or functions)."""
        seen, level = set(), [root]
        for _ in range(depth):
            nxt = []
            for obj in level:
                for ref in gc.get_referents(obj):
                    if isinstance(ref, torch.Tensor):
                        return True
                    if id(ref) in seen or isinstance(ref, (type, types.ModuleType, types.FunctionType, str, bytes)):
                        continue
                    seen.add(id(ref))
                    nxt.append(ref)
            level = nxt
        return False

    caches = 0
    for name, mod in list(sys.modules.items()):
        if not name.startswith("kinfunc") or name == "kinfunc.compiled":  # compile_fk keeps compiled functions (not the IK's)
            continue
        for attr, val in list(vars(mod).items()):
            assert not isinstance(val, torch.Tensor), f"{name}.{attr} is a tensor"
            if isinstance(val, (dict, list, tuple)) and not attr.startswith("__"):
                assert not holds_tensor(val, 4), f"{name}.{attr} holds a tensor"
            if isinstance(val, functools._lru_cache_wrapper) and val.cache_info().currsize:
                caches += 1
                assert not holds_tensor(val), f"{name}.{attr} (an lru_cache) holds a tensor"
    assert caches  # the static, tensor-free caches (per topology) were looked at

    @functools.lru_cache(maxsize=2)
    def keeps(n):
        return (n, torch.zeros(n))

    keeps(1)
    assert holds_tensor(keeps)  # the check sees a tensor kept by a cache


def test_independent_frames_solved_in_blocks_equal_one_batch(monkeypatch):
    """Long trials are solved in blocks of frames (cache-friendly); frames are independent, so
    poses, objective and the reported history are those of one batch."""
    import kinfunc.ik.gn as gn

    model = kf.models.lower_body("cmu", dtype=f64)
    trial = synthetic_trial(model, gait_motion(model, 90), noise=0.003, gaps=0.1, seed=11)
    whole = kf.ik.solve(model, trial)
    monkeypatch.setattr(gn, "_CHUNK", 25)
    blocks = kf.ik.solve(model, trial)
    torch.testing.assert_close(blocks.q, whole.q, atol=1e-12, rtol=0)
    assert blocks.objective == pytest.approx(whole.objective, rel=1e-12)
    assert blocks.history[-1] == pytest.approx(blocks.objective, rel=1e-12)
    assert all(b <= a * (1 + 1e-12) for a, b in zip(blocks.history, blocks.history[1:]))


def test_per_sample_confidence_weights_the_fit():
    """MarkerTrial.confidence (T, M): 0 acts as a gap, a low score lets a corrupted sample
    count less; it follows select/slice/resample."""
    import dataclasses

    model = kf.models.lower_body("cmu", dtype=f64)
    q = gait_motion(model, 20)
    trial = synthetic_trial(model, q, noise=0.0, seed=3)
    j = 4
    bad = trial.xyz.clone()
    bad[:, j] += torch.tensor([0.05, 0.0, 0.0], dtype=f64)
    conf = torch.ones(trial.n_frames, trial.n_markers, dtype=f64)
    conf[:, j] = 0.0
    gap = bad.clone()
    gap[:, j] = float("nan")
    r0 = kf.ik.solve(model, dataclasses.replace(trial, xyz=bad, confidence=conf))
    rg = kf.ik.solve(model, dataclasses.replace(trial, xyz=gap))
    torch.testing.assert_close(r0.q, rg.q, rtol=0, atol=1e-9)
    conf[:, j] = 0.01
    rl = kf.ik.solve(model, dataclasses.replace(trial, xyz=bad, confidence=conf))
    r1 = kf.ik.solve(model, dataclasses.replace(trial, xyz=bad))
    e = lambda r: float((r.q - q).abs().max())  # noqa: E731
    assert e(rl) < 0.2 * e(r1)
    t = dataclasses.replace(trial, confidence=conf)
    assert t.select(trial.names[j:j + 2]).confidence[0, 0] == 0.01
    assert t.slice(0.0, 0.05).confidence.shape[0] == t.slice(0.0, 0.05).n_frames
    assert t.resample(50.0).confidence.shape == (t.resample(50.0).n_frames, t.n_markers)
    with pytest.raises(ValueError, match="confidence shape"):
        dataclasses.replace(trial, confidence=conf[:, :3])


def test_coupled_gn_moves_shared_parameters_where_some_coordinates_are_unseen():
    """Keypoints (coco17) see no hand, foot or forearm twist: those coordinates make the pose
    block nearly singular, and an undamped first step can promise an increase. The coupled
    solve must then damp and go on (it once stopped at its start, "converged", scales untouched):
    fitting pose + segment scales beats the best pose of the unscaled model by a wide margin
    and moves the scales towards the subject's (6 % larger)."""
    model = kf.models.full_body("coco17", dtype=f64)
    free = kf.models.full_body("coco17", dtype=f64, clamped=False)
    from kinfunc.ik.synthetic import nongait_motion

    q = nongait_motion(free, "squat", n_frames=20).clone()
    for s in "rl":
        q[:, model.coordinate_names.index(f"knee_angle_{s}")] *= -1
    lo, hi = model.coordinate_limits()
    q = torch.maximum(torch.minimum(q, hi), lo)
    subject = model.replace(body_scales=model.body_scales * 1.06)
    trial = synthetic_trial(subject, q, noise=0.01, seed=3)
    pose = kf.ik.solve(model, trial, fit=("pose",))
    both = kf.ik.solve(model, trial, fit=("pose", "segment_scales"), symmetric=True)
    assert both.objective < 0.6 * pose.objective, (both.objective, pose.objective)
    assert float(both.model.body_scales.mean()) > 1.02
