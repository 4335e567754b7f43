"""IK that does not depend on where it starts: the segment sweep, restarts from neighbours,
continuity in time, the robust loss and the fit-quality report. Built-in model and synthetic
data here; the full-body model and real non-gait trials at the end (skipped without the data)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kinfunc as kf
from kinfunc import transforms as tf
from kinfunc.ik.gn import GNOptions, frame_costs, solve_gn
from kinfunc.ik.problem import objective as ik_objective
from kinfunc.ik.quality import partner_name
from kinfunc.ik.repair import repair
from kinfunc.ik.solve import build_problem
from kinfunc.ik.start import continuous_in_time
from kinfunc.ik.synthetic import gait_motion, synthetic_trial

from .shared import data

f64 = torch.float64
DEG = math.pi / 180


def _model():
    return kf.models.lower_body("opensim", dtype=f64)


def far_poses(model, T: int = 40, seed: int = 0) -> torch.Tensor:
    """Poses far from standing: lying on the back or side, upside down, deep squats, high
    kicks (random within the joint ranges), any heading."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = model.coordinate_limits()
    names = model.coordinate_names
    q = model.default_q().expand(T, -1).clone()
    for i, n in enumerate(names):
        if n.startswith("pelvis_t"):
            continue
        if n.startswith("pelvis"):
            q[:, i] = (torch.rand(T, generator=g, dtype=f64) * 2 - 1) * math.pi * (0.5 if n == "pelvis_list" else 1.0)
        else:
            a, b = float(lo[i]), float(hi[i])
            q[:, i] = a + (b - a) * (0.1 + 0.8 * torch.rand(T, generator=g, dtype=f64))
    q[:, names.index("pelvis_ty")] = 0.3 + torch.rand(T, generator=g, dtype=f64)
    return q


def angle_error(q1, q2):
    """Largest wrapped coordinate difference (rad) ``(T,)``."""
    d = torch.remainder(q1 - q2 + math.pi, 2 * math.pi) - math.pi
    return d.abs().amax(-1)


def test_segment_start_recovers_poses_far_from_standing_where_the_root_start_fails():
    """Noise-free markers of random far-from-standing poses: from the segment sweep every frame
    is recovered exactly; from the old start (root fit, legs at defaults) many are not, so the
    test can tell the two apart."""
    model = _model()
    q = far_poses(model)
    trial = synthetic_trial(model, q)
    res = kf.ik.solve(model, trial)
    assert float(res.marker_rms.max()) < 1e-6
    body_R = kf.fk(model, res.q).R, kf.fk(model, q).R
    assert float((body_R[0] - body_R[1]).abs().max()) < 1e-6  # same poses (angles may differ by turns)
    old = kf.ik.solve(model, trial, start="root", restarts=False)
    assert int((old.marker_rms > 0.01).sum()) >= 5


def test_segment_start_with_gaps_and_noise_is_never_worse_than_the_old_start_overall():
    model = _model()
    q = far_poses(model, 60, seed=1)
    trial = synthetic_trial(model, q, noise=0.003, gaps=0.15, seed=2)
    new = kf.ik.solve(model, trial)
    old = kf.ik.solve(model, trial, start="root")
    assert new.objective <= old.objective * 1.001
    assert float(new.marker_rms.median()) < 0.006


@settings(max_examples=25, deadline=None)
@given(st.floats(-0.5, 2.0), st.floats(-0.5, 0.5), st.floats(-0.75, 0.75), st.floats(-2.0, 0.15), st.floats(-3.1, 3.1))
def test_segment_start_places_ball_and_hinge_joints_exactly_in_closed_form(a, b, c, knee, heading):
    """Noise-free markers: the sweep's closed forms alone (no solve) give the hip's rotation (a
    ball: either Euler solution, the one in range) and the knee angle (a hinge) exactly, at any
    heading, even with one knee marker left."""
    from kinfunc.ik.start import segment_start

    model = _model()
    topo = model.topology
    q = model.default_q().clone()
    for n, v in zip(("hip_flexion_r", "hip_adduction_r", "hip_rotation_r", "knee_angle_r", "pelvis_rotation"),
                    (a, b, c, knee, heading)):
        q[topo.coordinate_index(n)] = v
    X = kf.marker_positions(model, q)[None]
    present = torch.ones(1, topo.n_markers, dtype=f64)
    shank = [i for i, n in enumerate(topo.marker_names) if n.startswith(("R.Shank", "R.Ankle"))]
    present[0, shank[1:]] = 0.0  # one marker on the shank
    inf = torch.full((topo.n_coordinates,), math.inf, dtype=f64)
    lo, hi = model.coordinate_limits()
    lo = torch.where(torch.tensor(topo.coordinate_clamped), lo, -inf)
    hi = torch.where(torch.tensor(topo.coordinate_clamped), hi, inf)
    with torch.inference_mode():
        q0 = segment_start(model, X, present, model.default_q(), lo, hi)
    R0, R = kf.fk(model, q0).R[0], kf.fk(model, q).R
    for body in ("pelvis", "femur_r", "tibia_r"):
        i = topo.body_index(body)
        assert torch.allclose(R0[i], R[i], atol=1e-9), body
    assert abs(float(q0[0, topo.coordinate_index("knee_angle_r")]) - knee) < 1e-9


def test_restarts_move_a_frame_out_of_a_wrong_basin_and_never_raise_a_cost():
    """Frames deliberately solved from a wrong start (legs crossed, pelvis turned) end in wrong
    basins; repair restarts them from their neighbours and brings them back, and no frame's
    cost goes up."""
    model = _model()
    q = gait_motion(model, 50)
    trial = synthetic_trial(model, q, noise=0.002, seed=4)
    problem, _ = build_problem(model, [trial], ("pose",))
    Z0 = q.clone()
    bad = torch.tensor([20, 21, 35])
    names = model.coordinate_names
    Z0[bad, names.index("pelvis_tilt")] += math.pi  # upside down, hip flexed the wrong way
    Z0[bad, names.index("hip_flexion_r")] = 2.0
    res = solve_gn(problem, Z0, None, GNOptions())
    before = frame_costs(problem, res.Z)[0]
    assert float(before[bad].min()) > 10 * float(before.median())  # wrong basins indeed
    fixed, report = repair(problem, res.Z)
    after = frame_costs(problem, fixed.Z)[0]
    assert bool((after <= before * (1 + 1e-12)).all())
    assert set(bad.tolist()) <= set(report.improved)
    assert float(after[bad].max()) < 3 * float(after.median())


def test_restarts_reach_the_middle_of_a_long_run_of_wrong_frames():
    """A run of wrong basins longer than the neighbourhood that judges a frame (40 frames
    against +-15: in its middle every neighbour is as bad, as in a real take where one arm
    stays flipped through a fast swing). The frames are also judged against their trial, so
    the whole run is restarted, round after round from the good frames that close in on it."""
    model = _model()
    q = gait_motion(model, 120)
    trial = synthetic_trial(model, q, noise=0.002, seed=5)
    problem, _ = build_problem(model, [trial], ("pose",))
    Z0 = q.clone()
    bad = torch.arange(40, 80)
    names = model.coordinate_names
    Z0[bad, names.index("pelvis_tilt")] += math.pi
    Z0[bad, names.index("hip_flexion_r")] = 2.0
    res = solve_gn(problem, Z0, None, GNOptions())
    before = frame_costs(problem, res.Z)[0]
    assert float(before[bad].min()) > 10 * float(before.median())
    fixed, report = repair(problem, res.Z)
    after = frame_costs(problem, fixed.Z)[0]
    assert bool((after <= before * (1 + 1e-12)).all())
    assert float(after[bad].max()) < 3 * float(after.median()), int((after[bad] > 3 * after.median()).sum())


def test_continuity_keeps_poses_and_removes_turn_and_euler_jumps():
    """A pelvis turning through 180 deg and a hip passing its other Euler solution, written with
    jumps: continuous_in_time gives the same body poses with small steps."""
    model = _model()
    T = 60
    q = gait_motion(model, T)
    names = model.coordinate_names
    q[:, names.index("pelvis_rotation")] = torch.linspace(2.5, 3.8, T, dtype=f64)
    jumpy = q.clone()
    pr = names.index("pelvis_rotation")
    jumpy[:, pr] = torch.remainder(jumpy[:, pr] + math.pi, 2 * math.pi) - math.pi  # wraps at +-pi
    # the other Euler solution of the right hip on every other frame
    hc = [names.index(n) for n in ("hip_flexion_r", "hip_adduction_r", "hip_rotation_r")]
    alt = jumpy[:, hc].clone()
    alt = torch.stack((alt[:, 0] + math.pi, math.pi - alt[:, 1], alt[:, 2] + math.pi), 1)
    jumpy[::2, hc] = torch.remainder(alt[::2] + math.pi, 2 * math.pi) - math.pi
    inf = torch.full((len(names),), math.inf, dtype=f64)
    out = continuous_in_time(model, jumpy, -inf, inf, torch.zeros(T, dtype=torch.long))
    P = lambda qq: kf.marker_positions(model, qq)  # noqa: E731
    assert float((P(out) - P(q)).abs().max()) < 1e-9
    assert float((out[1:] - out[:-1]).abs().max()) < 0.2
    assert float((jumpy[1:] - jumpy[:-1]).abs().max()) > 3.0


def _corrupted(model, T=120, seed=5):
    q = gait_motion(model, T)
    trial = synthetic_trial(model, q, noise=0.002, gaps=0.05, seed=seed)
    x = trial.xyz.clone()
    n = list(trial.names)
    i, j = n.index("R.Knee.Lat"), n.index("L.Knee.Lat")
    x[40:60, [i, j]] = x[40:60, [j, i]]  # left/right swap
    for m in ("R.Thigh.Upper", "R.Thigh.Front", "R.Thigh.Rear"):  # a displaced cluster
        x[70:110, n.index(m)] += torch.tensor([0.06, 0.0, 0.05], dtype=f64)
    return q, dataclasses.replace(trial, xyz=x)


def test_robust_loss_finds_swaps_and_displaced_markers_and_fits_better():
    model = _model()
    q, trial = _corrupted(model)
    plain = kf.ik.solve(model, trial)
    rob = kf.ik.solve(model, trial, robust=True)
    e_plain = angle_error(plain.q, q).mean()
    e_rob = angle_error(rob.q, q).mean()
    assert e_rob < 0.5 * e_plain and float(e_rob) < 3 * DEG
    issues = rob.quality.issues
    swaps = {(i.marker, i.reason) for i in issues if i.reason.startswith("swapped")}
    assert ("R.Knee.Lat", "swapped with L.Knee.Lat") in swaps and ("L.Knee.Lat", "swapped with R.Knee.Lat") in swaps
    disp = [i for i in issues if i.marker.startswith("R.Thigh") and i.reason.startswith("displaced")]
    assert {i.marker for i in disp} == {"R.Thigh.Upper", "R.Thigh.Front", "R.Thigh.Rear"}
    for i in disp:
        assert 66 <= i.first <= 75 and 105 <= i.last <= 109 and i.weight < 0.1
    swap_frames = [(i.first, i.last) for i in issues if i.reason.startswith("swapped")]
    assert all(38 <= a and b <= 61 for a, b in swap_frames)
    assert rob.quality.robust and not bool(rob.frame_flags.any())  # the down-weighted samples are set aside
    assert not plain.quality.ok and int(plain.frame_flags.sum()) > 10  # without the robust loss: flagged, not silent


def test_quality_is_clean_on_clean_data_and_lines_are_readable():
    model = _model()
    q = gait_motion(model, 80)
    res = kf.ik.solve(model, synthetic_trial(model, q, noise=0.002, gaps=0.1, seed=1))
    assert res.quality.ok, res.quality.lines()
    assert res.frame_flags.shape == (80,) and res.marker_flags.shape == (len(res.marker_names),)
    assert "no doubtful" in res.quality.summary()


def test_partner_names():
    names = ("RKNE", "LKNE", "R.Knee.Lat", "L.Knee.Lat", "knee_r", "knee_l", "C7")
    assert partner_name("RKNE", names) == "LKNE"
    assert partner_name("L.Knee.Lat", names) == "R.Knee.Lat"
    assert partner_name("knee_r", names) == "knee_l"
    assert partner_name("C7", names) is None


def test_shape_fit_on_a_subsample_matches_the_full_fit():
    """Shared parameters fitted on a subsample of frames (weights raised to keep the balance with
    the priors) land where the fit on every frame does; all frames get poses."""
    from kinfunc.ik.synthetic import perturbed_model, rom_motion

    model = kf.models.lower_body("cmu", dtype=f64)
    truth = perturbed_model(model, {"femur_r": 0.95, "femur_l": 0.95, "tibia_r": 1.04, "tibia_l": 1.04})
    trial = synthetic_trial(truth, rom_motion(model, 400), noise=0.002, seed=2)
    kw = dict(fit=("pose", "segment_scales"), symmetric=True)
    full = kf.ik.solve(model, trial, shape_frames=0, **kw)
    sub = kf.ik.solve(model, trial, shape_frames=100, **kw)
    assert float((full.model.body_scales - sub.model.body_scales).abs().max()) < 3e-3
    assert sub.q.shape == full.q.shape and float(sub.marker_rms.max()) < 0.01
    assert sub.objective == pytest.approx(
        float(ik_objective(*_objective_args(model, trial, sub, kw))), rel=1e-9
    )


def _objective_args(model, trial, res, kw):
    """``(problem, Z, theta)`` of ``res`` for :func:`kinfunc.ik.problem.objective`."""
    problem, info = build_problem(model, [trial], kw["fit"], symmetric=True)
    names = problem.theta_names
    theta = torch.zeros(1, len(names), dtype=f64)
    for k, n in enumerate(names):
        body = n.split(":", 1)[1].replace("r/l", "r")
        theta[0, k] = res.model.body_scales[model.topology.body_index(body), 0]
    return problem, res.q[:, info.free_index], theta


# ----------------------------------------------------------------------------- real data
def test_nongait_cmu_jumps_builtin_model_meets_the_bar():
    """CMU subject 85 (jumps and a flip), built-in CMU model, scales + offsets + poses: mean
    marker RMS <= 12 mm, 99th percentile <= 25 mm, no frame above 40 mm."""
    trial = kf.io.load_c3d(data("nongait/cmu_85_02.c3d"))
    trial = trial.reoriented(**dict(trial.suggest_orientation()))
    model = kf.models.lower_body("cmu", dtype=f64)
    m = kf.markersets.match(model.marker_names, trial.names)
    trial = trial.renamed({t: mm for mm, t in m.pairs.items() if t != mm})
    res = kf.ik.solve(model, trial, fit=("pose", "segment_scales", "marker_offsets"))
    rms = res.marker_rms[torch.isfinite(res.marker_rms)]
    assert float(rms.mean()) <= 0.012
    assert float(torch.quantile(rms, 0.99)) <= 0.025
    assert float(rms.max()) <= 0.040


def test_full_body_nongait_synthetic_with_corruption():
    """The full-body model (true scaling), every non-gait motion (squat, sit-to-stand, jump,
    full turn, lying down, arms overhead, a cartwheel through the pelvis' gimbal lock): 5 mm
    noise, 20 % gaps, a displaced thigh cluster and a knee left/right swap, from the default
    start with the robust loss and smoothness 1. Every coordinate within 1 deg RMS of the
    truth except forearm pronation and humeral rotation (1.5 deg: two wrist markers 5 cm
    apart, and with the elbow straight the two turn about nearly one axis), their mean under
    0.5 deg, the pelvis orientation within 1 deg RMS; the corruptions reported."""
    from kinfunc.ik.synthetic import NONGAIT_KINDS, nongait_suite

    model = kf.io.load_osim(data("arnold2013synthetic/subject01/subject01.osim"), dtype=f64)
    rot = [i for i, n in enumerate(model.coordinate_names) if not n.startswith("pelvis")]
    bar = torch.tensor([1.5 if model.coordinate_names[i].startswith(("pro_sup", "arm_rot")) else 1.0 for i in rot], dtype=f64) * DEG
    suite = nongait_suite(model, n_frames=240, noise=0.0029, seed=0)
    assert {k for k, *_ in suite} == set(NONGAIT_KINDS)
    for kind, q, trial, truth in suite:
        res = kf.ik.solve(model, trial, robust=True, smoothness=1.0)
        d = torch.remainder(res.q - q + math.pi, 2 * math.pi) - math.pi
        rms = d[:, rot].square().mean(0).sqrt()
        worst = int(torch.argmax(rms / bar))
        assert bool((rms < bar).all()), (kind, model.coordinate_names[rot[worst]], float(rms[worst] / DEG))
        assert float(rms.mean()) < 0.5 * DEG, (kind, float(rms.mean() / DEG))
        Rt, Rr = kf.fk(model, q).R[:, 0], kf.fk(model, res.q).R[:, 0]
        pel = tf.matrix_to_rotvec(Rt.transpose(-1, -2) @ Rr).norm(dim=-1)
        assert float(pel.square().mean().sqrt()) < 1.0 * DEG, kind
        found = {i.marker for i in res.quality.issues if i.reason.startswith("displaced")}
        assert {"RTH1", "RTH2", "RTH3"} <= found, kind
        assert any(i.reason == "swapped with LLFC" for i in res.quality.issues), kind


def test_automatic_scaling_of_the_generic_full_body_model_from_walking_markers():
    """arnold2013synthetic: the generic model and the walking markers alone (no virtual joint
    centres) -> every non-mtp coordinate within 5 deg of the truth and their mean within 1.5 deg
    (mtp is welded in the true model and locked in the generic one); the true model gives the
    true coordinates."""
    d = data("arnold2013synthetic")
    generic = kf.io.load_osim(d / "unscaled_generic.osim", dtype=f64)
    trial = kf.io.load_trc(d / "subject01" / "markers.trc")
    trial = trial.select([n for n in trial.names if not n.endswith("JC")])
    ref = kf.io.read_mot(d / "subject01" / "coordinates.sto")
    fit = kf.ik.scale_subject(generic, trial)
    res = fit.results[0]

    def errors(model, q):
        out = {}
        for i, n in enumerate(model.coordinate_names):
            if n in ref.names and model.topology.coordinate_motion[i] is kf.model.Motion.ROTATIONAL:
                out[n] = float((q[:, i] - ref.column(n).to(q)).square().mean().sqrt()) / DEG
        return out

    e = {n: v for n, v in errors(fit.model, res.q).items() if "mtp" not in n}
    assert max(e.values()) < 5.0, e
    assert sum(e.values()) / len(e) < 1.5, e
    true = kf.io.load_osim(d / "subject01" / "subject01.osim", dtype=f64)
    exact = kf.ik.solve(true, kf.io.load_trc(d / "subject01" / "markers.trc"))
    assert max(errors(true, exact.q).values()) < 0.05


def _least_change_reference(cand, feas, pen, turns, new_trial):
    """The plain sequential dynamic programme (a loop over frames) that the scan replaces."""
    G, T = feas.shape[:2]
    inf = torch.tensor(float("inf"), dtype=cand.dtype)
    out = torch.zeros(G, T, dtype=torch.long)
    for g in range(G):
        cost, back = torch.where(feas[g, 0], pen[g, 0], inf), []
        for t in range(1, T):
            d = cand[g, t][:, None] - cand[g, t - 1][None]
            step = (d - turns[g] * torch.round(d / turns[g])).abs().sum(-1) * (0.0 if new_trial[t - 1] else 1.0)
            m = step + cost[None]
            back.append(m.argmin(1))
            cost = torch.where(feas[g, t], m.gather(1, back[-1][:, None])[:, 0] + pen[g, t], inf)
        k = int(cost.argmin())
        for t in range(T - 1, -1, -1):
            out[g, t] = k
            k = int(back[t - 1][k]) if t else k
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.integers(0, 10_000))
def test_least_change_scan_equals_the_sequential_dynamic_programme(T, seed):
    """The log-depth (min, +) scan picks a path as cheap as the frame-by-frame programme's."""
    from kinfunc.ik.start import _least_change

    g = torch.Generator().manual_seed(seed)
    G = 3
    cand = torch.randn(G, T, 2, 3, generator=g, dtype=f64) * 3
    feas = torch.rand(G, T, 2, generator=g) > 0.25
    feas[:, :, 0] |= ~feas[:, :, 1]
    pen = torch.rand(G, T, 2, generator=g, dtype=f64) * 0.01
    turns = torch.full((G, 3), 2 * math.pi, dtype=f64)
    new_trial = torch.rand(max(T - 1, 0), generator=g) < 0.1

    def total(ch):
        c = torch.zeros((), dtype=f64)
        for gi in range(G):
            for t in range(T):
                assert bool(feas[gi, t, ch[gi, t]])
                c = c + pen[gi, t, ch[gi, t]]
                if t and not bool(new_trial[t - 1]):
                    d = cand[gi, t, ch[gi, t]] - cand[gi, t - 1, ch[gi, t - 1]]
                    c = c + (d - turns[gi] * torch.round(d / turns[gi])).abs().sum()
        return float(c)

    fast = _least_change(cand, feas, pen, turns, new_trial)
    assert total(fast) == pytest.approx(total(_least_change_reference(cand, feas, pen, turns, new_trial)), abs=1e-9)


def test_frames_without_data_are_flagged_not_silent():
    """A person leaving the volume: frames with no markers (or fewer than 3) are doubtful frames
    with that reason, the others are not."""
    model = _model()
    q = gait_motion(model, 40)
    trial = synthetic_trial(model, q, noise=0.002, seed=1)
    x = trial.xyz.clone()
    x[10:15] = float("nan")
    x[20, 2:] = float("nan")  # two markers left
    res = kf.ik.solve(model, dataclasses.replace(trial, xyz=x))
    flagged = set(torch.nonzero(res.frame_flags).flatten().tolist())
    assert set(range(10, 15)) | {20} <= flagged
    why = dict(res.quality.frame_reasons)
    assert "no marker data" in why[12] and "only 2 markers" in why[20]
    assert not ({0, 1, 2, 30, 31} & flagged)
