"""Non-gait synthetic motions of a full-body OpenSim model (kinfunc.ik.synthetic): feasible,
continuous, and doing what their names say (checked by forward kinematics); label corruption
with a known answer."""
import math
import warnings

import numpy as np
import pytest
import torch

import kinfunc as kf
from kinfunc.ik.synthetic import NONGAIT_KINDS, corrupt_trial, nongait_motion, nongait_suite, synthetic_trial

from .shared import data

MODEL = "arnold2013synthetic/subject01/subject01.osim"
T = 200
DEG = 180.0 / math.pi


@pytest.fixture(scope="module")
def model():
    return kf.io.load_osim(data(MODEL), dtype=torch.float64)


@pytest.fixture(scope="module")
def motions(model):
    """kind -> (q (T, C), markers (T, M, 3), poses), no range warnings allowed."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kind in NONGAIT_KINDS:
            q = nongait_motion(model, kind, n_frames=T)
            out[kind] = (q, kf.marker_positions(model, q), kf.fk(model, q))
    return out


def _c(model, name):
    return model.coordinate_names.index(name)


def _m(model, name):
    return model.marker_names.index(name)


def _b(model, name):
    return model.body_names.index(name)


def _floor(model):
    return kf.marker_positions(model, model.default_q())[:, 1].min().item()


def test_sign_conventions(model):
    """What the motions rely on: knee +flexion moves the ankle back, hip +flexion the knee
    forward, ankle + is dorsiflexion, arm_add - is abduction, lumbar_extension + leans back,
    pelvis_tilt +90 deg lies the body supine with the head towards -X."""
    q0 = model.default_q()
    x0 = kf.marker_positions(model, q0)

    def moved(**kw):
        q = q0.clone()
        for k, v in kw.items():
            q[_c(model, k)] = v * math.pi / 180
        return kf.marker_positions(model, q) - x0

    for s in "RL":
        side = s.lower()
        assert moved(**{f"knee_angle_{side}": 90})[_m(model, f"{s}AJC"), 0] < -0.3
        assert moved(**{f"hip_flexion_{side}": 60})[_m(model, f"{s}KJC"), 0] > 0.25
        assert moved(**{f"ankle_angle_{side}": 20})[_m(model, f"{s}TOE"), 1] > 0.03
        lateral = 1.0 if s == "R" else -1.0
        assert lateral * moved(**{f"arm_add_{side}": -90})[_m(model, f"{s}FAradius"), 2] > 0.4
        assert lateral * moved(**{f"hip_adduction_{side}": -30})[_m(model, f"{s}KJC"), 2] > 0.1
    assert moved(lumbar_extension=30)[_m(model, "C7"), 0] < -0.15
    d = moved(pelvis_tilt=90)
    assert d[_m(model, "C7"), 0] < -0.3 and d[_m(model, "RASI"), 1] > d[_m(model, "RPSI"), 1]


@pytest.mark.parametrize("kind", NONGAIT_KINDS)
def test_feasible_and_continuous(model, motions, kind):
    q, x, _ = motions[kind]
    assert q.shape == (T, len(model.coordinate_names)) and q.dtype == model.dtype
    assert torch.isfinite(q).all() and torch.isfinite(x).all()
    topo = model.topology
    for i, n in enumerate(model.coordinate_names):
        lo, hi = topo.coordinate_ranges[i]
        if topo.coordinate_clamped[i]:
            assert lo - 1e-12 <= q[:, i].min() and q[:, i].max() <= hi + 1e-12, n
        if topo.coordinate_locked[i]:
            assert (q[:, i] == topo.coordinate_defaults[i]).all(), n
    step = (q[1:] - q[:-1]).abs().amax(0)
    rot = torch.tensor(["pelvis_t" not in n for n in model.coordinate_names])
    assert step[rot].max() < 0.25, "angle step > 0.25 rad/frame"
    assert step[~rot].max() < 0.05, "translation step > 5 cm/frame"
    acc = (q[2:] - 2 * q[1:-1] + q[:-2]).abs().amax(0)
    assert acc.max() < 0.08, "a sharp kink (second difference) in q"
    # markers move continuously too (no wrapped angle anywhere) and nothing sinks into the floor
    assert (x[1:] - x[:-1]).norm(dim=-1).max() < 0.15  # 15 m/s: a fast arm swing, a cartwheel
    low = x[..., 1].amin(1)
    assert low.min() > _floor(model) - 0.02
    if kind != "jump":  # always in contact with the floor
        assert low.max() < _floor(model) + 0.02


def test_squat(model, motions):
    q, x, _ = motions["squat"]
    ty = q[:, _c(model, "pelvis_ty")]
    assert ty[0] - ty.min() > 0.25
    for s in "rl":
        assert q[:, _c(model, f"knee_angle_{s}")].max() * DEG >= 115
        assert q[:, _c(model, f"hip_flexion_{s}")].max() * DEG >= 100
        assert q[:, _c(model, f"ankle_angle_{s}")].max() * DEG >= 20  # dorsiflexed
    assert q[:, _c(model, "pelvis_tilt")].min() * DEG < -15  # tilted forward
    heel = x[:, [_m(model, "RCAL"), _m(model, "LCAL")]]
    assert (heel[..., [0, 2]] - heel[:1, :, [0, 2]]).norm(dim=-1).max() < 0.03  # feet stay put
    knee = x[:, _m(model, "RKJC"), 0] - x[:, _m(model, "RAJC"), 0]
    assert knee.max() > 0.2  # knees forward of the ankles at the bottom


def test_sit_to_stand(model, motions):
    q, _, _ = motions["sit_to_stand"]
    ty = q[:, _c(model, "pelvis_ty")]
    assert ty[T // 2] - ty[0] > 0.25 and ty[T // 2] - ty[-1] > 0.25
    assert abs(q[0, _c(model, "knee_angle_r")] * DEG - 90) < 5
    assert abs(q[T // 2, _c(model, "knee_angle_r")] * DEG) < 2


def test_jump(model, motions):
    q, x, _ = motions["jump"]
    ty = q[:, _c(model, "pelvis_ty")]
    assert 0.25 < ty.max() - ty[0] < 0.35
    assert ty.min() < ty[0] - 0.15  # countermovement
    assert x[..., 1].amin(1).max() > _floor(model) + 0.15  # flight: both feet off the floor
    arm = q[:, _c(model, "arm_flex_r")] * DEG
    assert arm.min() < -45 and arm.max() > 75  # arm swing


def test_turn360(model, motions):
    _, _, p = motions["turn360"]
    R = p.R[:, _b(model, "pelvis")]
    heading = np.unwrap(torch.atan2(-R[:, 2, 0], R[:, 0, 0]).numpy())
    assert (heading.max() - heading.min()) * DEG > 359
    assert (np.diff(heading) > -1e-9).all()  # one way round
    assert R[:, 1, 1].min() > 0.95  # upright throughout


def test_lying(model, motions):
    q, x, p = motions["lying"]
    mid = slice(int(0.4 * T), int(0.6 * T))
    hips = p.t[:, [_b(model, "femur_r"), _b(model, "femur_l")]].mean(1)
    shoulders = p.t[:, [_b(model, "humerus_r"), _b(model, "humerus_l")]].mean(1)
    axis = torch.nn.functional.normalize(shoulders - hips, dim=-1)
    assert axis[mid, 1].abs().max() < 0.3  # body long axis horizontal
    assert p.R[mid, _b(model, "pelvis"), 1, 1].abs().max() < 0.3  # pelvis long axis too
    assert q[:, _c(model, "pelvis_ty")].max() < 0.35  # pelvis near the floor
    up = x[:, _m(model, "RASI"), 1] - x[:, _m(model, "RPSI"), 1]
    assert up[0] > 0.1 and up[-1] < -0.1  # supine at the start, prone at the end (rolled over)


def test_arms_overhead(model, motions):
    _, x, _ = motions["arms_overhead"]
    c7 = x[:, _m(model, "C7"), 1]
    for w in ("RFAradius", "LFAradius"):  # wrists above the top of the head (~C7 + 0.25 m)
        assert (x[:, _m(model, w), 1] - c7).max() > 0.3


def test_cartwheel(model, motions):
    _, x, p = motions["cartwheel"]
    feet = x[:, [_m(model, n) for n in ("RCAL", "RTOE", "LCAL", "LTOE")], 1].amax(1)
    assert (feet - x[:, _m(model, "C7"), 1]).max() > 0.25  # feet above the head
    R = p.R[:, _b(model, "pelvis")]
    roll = np.unwrap(torch.atan2(R[:, 2, 1], R[:, 1, 1]).numpy())  # pelvis Y axis about world X
    assert (roll.max() - roll.min()) * DEG > 359
    tz = x[:, _m(model, "RASI"), 2]
    assert tz[-1] - tz[0] > 1.5  # travels sideways


def test_unknown_kind(model):
    with pytest.raises(ValueError, match="squat"):
        nongait_motion(model, "moonwalk")


def test_corrupt_trial(model, motions):
    q = motions["squat"][0][:60]
    tr = synthetic_trial(model, q, noise=0.002, gaps=0.2, seed=3)
    before = tr.xyz.clone()
    cl, off = ("RTH1", "RTH2", "RTH3"), (0.08, 0.0, 0.06)
    bad, truth = corrupt_trial(tr, displaced=(cl, off, 0.2, 0.4), swap=("RLFC", "LLFC", 0.35, 0.5))
    assert torch.equal(tr.xyz.nan_to_num(7.0), before.nan_to_num(7.0))  # input untouched
    t = tr.time
    win_d = (t >= 0.2 - 1e-9) & (t < 0.4 - 1e-9)
    win_s = (t >= 0.35 - 1e-9) & (t < 0.5 - 1e-9)
    assert win_d.sum() == 20 and win_s.sum() == 15
    assert torch.equal(truth["displaced"]["frames"], torch.nonzero(win_d).flatten())
    assert torch.equal(truth["swap"]["frames"], torch.nonzero(win_s).flatten())
    ic, ia, ib = [_m(model, n) for n in cl], _m(model, "RLFC"), _m(model, "LLFC")
    expect = tr.xyz.clone()
    in_cl = torch.isin(torch.arange(tr.n_markers), torch.tensor(ic))
    expect[win_d[:, None] & in_cl[None, :]] += torch.tensor(off, dtype=torch.float64)
    expect[win_s, ia], expect[win_s, ib] = tr.xyz[win_s, ib], tr.xyz[win_s, ia]
    assert torch.equal(bad.xyz.nan_to_num(7.0), expect.nan_to_num(7.0))  # NaN gaps stay NaN
    mask = torch.zeros(tr.n_frames, tr.n_markers, dtype=torch.bool)
    mask[:, ic] = win_d[:, None]
    mask[:, [ia, ib]] |= win_s[:, None]
    assert torch.equal(truth["mask"], mask)
    changed = ((bad.xyz - tr.xyz).abs() > 0).any(-1) | (bad.xyz.isnan() != tr.xyz.isnan()).any(-1)
    assert not (changed & ~mask).any()  # nothing outside the truth moved
    assert bad.meta["corruption"] is truth and bad.names == tr.names
    # a scalar offset: that length, direction from the seed
    b1, t1 = corrupt_trial(tr, displaced=("RTH1", 0.1, 0.0, 0.1), seed=1)
    assert abs(t1["displaced"]["offset"].norm() - 0.1) < 1e-12 and t1["swap"] is None
    with pytest.raises(KeyError, match="RTHX"):
        corrupt_trial(tr, swap=("RTHX", "RLFC", 0.0, 0.1))


def test_nongait_suite(model):
    n = 45
    suite = nongait_suite(model, n_frames=n, noise=0.005, gaps=0.2, seed=0)
    assert [s[0] for s in suite] == list(NONGAIT_KINDS)
    for kind, q, tr, truth in suite:
        assert q.shape == (n, len(model.coordinate_names)) and tr.xyz.shape == (n, len(model.marker_names), 3)
        assert truth["kind"] == kind and truth["displaced"]["markers"] == ("RTH1", "RTH2", "RTH3")
        assert truth["displaced"]["frames"].tolist() == list(range(n // 3, 2 * n // 3))
        assert truth["swap"]["markers"] == ("RLFC", "LLFC") and len(truth["swap"]["frames"]) > 0
        assert 0.1 < tr.xyz.isnan().any(-1).float().mean() < 0.3
