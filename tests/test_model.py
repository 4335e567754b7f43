"""Builder validation, topology, and the built-in lower-body model's anatomy."""
import math

import pytest
import torch

import kinfunc as kf

f64 = torch.float64


def _chain():
    mb = kf.ModelBuilder()
    mb.add_body("a", kf.Joint.pin("ja", "ground", "qa"))
    return mb


def test_builder_errors_name_the_element():
    mb = _chain()
    mb.add_body("b", kf.Joint.pin("jb", "nowhere", "qb"))
    with pytest.raises(kf.ModelError, match="unknown parent 'nowhere'"):
        mb.build()
    mb = _chain()
    with pytest.raises(kf.ModelError, match="duplicate body name 'a'"):
        mb.add_body("a", kf.Joint.pin("jx", "ground", "qx"))
    with pytest.raises(kf.ModelError, match="duplicate joint name 'ja'"):
        mb.add_body("c", kf.Joint.pin("ja", "ground", "qx"))
    with pytest.raises(kf.ModelError, match="axis"):
        kf.Dof((0, 0, 0), "q")
    with pytest.raises(kf.ModelError, match="axis"):
        kf.Dof((1, float("nan"), 0), "q")
    with pytest.raises(kf.ModelError, match="at most 3 rotations"):
        kf.Joint("j", rotations=tuple(kf.Dof((1, 0, 0), f"q{i}") for i in range(4)))
    mb = kf.ModelBuilder()
    mb.add_body("x", kf.Joint.pin("jx", "y", "q1"))
    mb.add_body("y", kf.Joint.pin("jy", "x", "q2"))
    with pytest.raises(kf.ModelError, match="cycle"):
        mb.build()
    mb = _chain()
    mb.add_marker("m", "zz", (0, 0, 0))
    with pytest.raises(kf.ModelError, match="marker 'm' is on unknown body 'zz'"):
        mb.build()
    mb = _chain()
    mb.add_coordinate("qa", default=2.0, range=(-1, 1))
    with pytest.raises(kf.ModelError, match="default 2.0 lies outside"):
        mb.build()
    with pytest.raises(kf.ModelError, match="reserved"):
        kf.ModelBuilder().add_body("ground", kf.Joint.weld("w", "ground"))


def test_builder_orders_bodies_topologically_and_infers_coordinates():
    mb = kf.ModelBuilder()
    mb.add_body("hand", kf.Joint.pin("wrist", "forearm", "wrist_flex"))
    mb.add_body("upper", kf.Joint.ball("shoulder", "ground", ("s1", "s2", "s3")))
    mb.add_body("forearm", kf.Joint.slider("elbow", "upper", "elbow_slide"))
    m = mb.build()
    assert m.body_names == ("upper", "forearm", "hand")
    assert m.topology.parents == (-1, 0, 1)
    assert m.coordinate_names == ("s1", "s2", "s3", "elbow_slide", "wrist_flex")
    assert m.topology.coordinate_motion[3] is kf.Motion.TRANSLATIONAL
    assert m.topology.levels == ((0,), (1,), (2,))


def test_coupler_makes_dependent_coordinate():
    mb = kf.ModelBuilder()
    mb.add_body("a", kf.Joint.pin("ja", "ground", "knee"))
    mb.add_body("b", kf.Joint.pin("jb", "a", "beta", parent_location=(0, -1, 0)))
    mb.add_coupler("beta", "knee", kf.functions.Linear(0.5, 0.0))
    mb.add_marker("m", "b", (0, -1, 0))
    m = mb.build(dtype=f64)
    assert m.coordinate_names == ("knee",) and m.topology.dependent_names == ("beta",)
    x = kf.marker_positions(m, torch.tensor([1.0], dtype=f64))
    # total rotation 1.5 rad for the second segment
    expect = torch.tensor([math.sin(1.0) + math.sin(1.5), -math.cos(1.0) - math.cos(1.5), 0], dtype=f64)
    torch.testing.assert_close(x[0], expect)


def test_weld_only_model_has_no_coordinates():
    mb = kf.ModelBuilder()
    mb.add_body("base", kf.Joint.weld("w", "ground", parent_location=(1, 2, 3)))
    mb.add_marker("m", "base", (0, 0, 1))
    m = mb.build(dtype=f64)
    assert m.default_q().shape == (0,)
    torch.testing.assert_close(kf.marker_positions(m, m.default_q())[0], torch.tensor([1.0, 2.0, 4.0], dtype=f64))


# ----------------------------------------------------------------- built-in lower body
@pytest.fixture(scope="module", params=["cmu", "pig", "opensim"])
def lb(request):
    m = kf.models.lower_body(request.param, dtype=f64)
    x = dict(zip(m.marker_names, kf.marker_positions(m, m.default_q())))
    return request.param, m, x, kf.fk(m, m.default_q())


def test_lower_body_structure(lb):
    name, m, _, _ = lb
    assert len(m.coordinate_names) == 18
    assert m.coordinate_names[:6] == ("pelvis_tilt", "pelvis_list", "pelvis_rotation", "pelvis_tx", "pelvis_ty", "pelvis_tz")
    for side in "rl":
        for c in ("hip_flexion", "hip_adduction", "hip_rotation", "knee_angle", "ankle_angle", "subtalar_angle"):
            assert f"{c}_{side}" in m.coordinate_names
    lo, hi = m.coordinate_limits()
    assert (lo < hi).all() and (lo <= m.default_q()).all() and (m.default_q() <= hi).all()
    knee = m.topology.coordinate_index("knee_angle_r")
    assert hi[knee] < 0.2 and lo[knee] < -1.9  # flexion is negative (Gait2392)


def _side_markers(name):
    return {
        "cmu": dict(asis=("RFWT", "LFWT"), knee="RKNE", ankle="RANK", heel="RHEE", toe="RTOE"),
        "pig": dict(asis=("RASI", "LASI"), knee="RKNE", ankle="RANK", heel="RHEE", toe="RTOE"),
        "opensim": dict(asis=("R.ASIS", "L.ASIS"), knee="R.Knee.Lat", ankle="R.Ankle.Lat", heel="R.Heel", toe="R.Toe.Tip"),
    }[name]


def test_lower_body_markers_land_on_the_landmarks(lb):
    name, m, x, poses = lb
    k = _side_markers(name)
    body = {n: i for i, n in enumerate(m.body_names)}
    knee_center = poses.t[body["tibia_r"]]
    ankle_center = poses.t[body["talus_r"]]
    # ASIS breadth of adults: 20-30 cm, symmetric about the pelvis
    r, l = x[k["asis"][0]], x[k["asis"][1]]
    assert 0.20 < float((r - l).norm()) < 0.30
    assert abs(float(r[2] + l[2])) < 1e-9
    # lateral femoral epicondyle: within 3 cm of the knee axis height, 3-8 cm lateral (+Z right)
    assert abs(float(x[k["knee"]][1] - knee_center[1])) < 0.03
    assert 0.03 < float(x[k["knee"]][2] - knee_center[2]) < 0.08
    # lateral malleolus: at ankle-joint height, lateral
    assert abs(float(x[k["ankle"]][1] - ankle_center[1])) < 0.02
    assert 0.03 < float(x[k["ankle"]][2] - ankle_center[2]) < 0.08
    # heel behind the ankle, toe in front, both near the floor when standing at default height
    assert float(x[k["heel"]][0]) < float(ankle_center[0]) - 0.03
    assert float(x[k["toe"]][0]) > float(ankle_center[0]) + 0.10
    for mk in (k["heel"], k["toe"]):
        assert 0.0 < float(x[mk][1]) < 0.07
    # every right marker has a mirrored left twin
    for n, p in x.items():
        twin = {"R": "L"}.get(n[0], None)
        if twin and (twin + n[1:]) in x:
            torch.testing.assert_close(x[twin + n[1:]] * torch.tensor([1, 1, -1], dtype=f64), p)


def test_lower_body_knee_flexion_moves_ankle_backwards():
    m = kf.models.lower_body("cmu", dtype=f64)
    q = m.default_q()
    q2 = q.clone()
    q2[m.topology.coordinate_index("knee_angle_r")] = -math.pi / 2
    i = m.marker_names.index("RANK")
    a0, a1 = kf.marker_positions(m, q)[i], kf.marker_positions(m, q2)[i]
    assert float(a1[0]) < float(a0[0]) - 0.3  # shank swings back (X forward)
    hip = m.topology.coordinate_index("hip_flexion_r")
    q3 = q.clone()
    q3[hip] = math.pi / 2
    assert float(kf.marker_positions(m, q3)[m.marker_names.index("RKNE")][0]) > 0.3  # thigh forward


def test_to_returns_the_model_itself_only_when_every_leaf_is_already_there():
    from kinfunc._pytree import tree_leaves

    m = kf.models.lower_body("cmu", dtype=torch.float64)
    assert m.to(dtype=torch.float64) is m and m.to(device="cpu") is m and m.to() is m
    m32 = m.to(dtype=torch.float32)
    assert m32 is not m and all(t.dtype == torch.float32 for t in tree_leaves(m32))
    mixed = m.replace(global_scale=m.global_scale.float())  # one leaf off: converted, not returned as is
    back = mixed.to(dtype=torch.float64)
    assert back is not mixed and all(t.dtype == torch.float64 for t in tree_leaves(back))
