"""URDF import/export: semantics against a naive reference, round trips, peers, errors."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kinfunc as kf
from kinfunc import transforms as tf
from kinfunc.io.urdf import UrdfError, euler_xyz_to_rpy, rpy_to_euler_xyz

ROBOT = """<?xml version="1.0"?>
<robot name="t">
  <link name="world"/>
  <link name="base"><inertial><mass value="1"/></inertial></link>
  <link name="l1"><visual/></link>
  <link name="l2"><visual/></link>
  <link name="l3"><visual/></link>
  <link name="l4"><visual/></link>
  <link name="l5"><visual/></link>
  <joint name="float" type="floating">
    <parent link="world"/><child link="base"/><origin xyz="0.1 0.2 0.3" rpy="0.3 -0.4 1.1"/>
  </joint>
  <joint name="rev" type="revolute">
    <parent link="base"/><child link="l1"/><origin xyz="0 0.5 0" rpy="1.2 0.3 -0.7"/>
    <axis xyz="0 0.6 0.8"/><limit lower="-1.5" upper="2.0" effort="1" velocity="1"/>
  </joint>
  <joint name="cont" type="continuous">
    <parent link="l1"/><child link="l2"/><origin xyz="0.2 0 -0.1" rpy="0 1.5 0.2"/><axis xyz="1 0 0"/>
  </joint>
  <joint name="pri" type="prismatic">
    <parent link="l2"/><child link="l3"/><origin xyz="0 0 0.3"/><axis xyz="0 0 1"/>
    <limit lower="0" upper="0.4" effort="1" velocity="1"/>
  </joint>
  <joint name="fix" type="fixed">
    <parent link="l3"/><child link="l4"/><origin xyz="0.05 0.05 0" rpy="0.1 0.2 0.3"/>
  </joint>
  <joint name="mim" type="revolute">
    <parent link="base"/><child link="l5"/><origin xyz="0 -0.2 0.1"/><axis xyz="0 0 1"/>
    <limit lower="-3" upper="3" effort="1" velocity="1"/><mimic joint="rev" multiplier="-2.0" offset="0.25"/>
  </joint>
</robot>
"""


def _rpy(r, p, y):
    def e(axis, a):
        c, s = math.cos(a), math.sin(a)
        return {
            0: torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float64),
            1: torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64),
            2: torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64),
        }[axis]

    return e(2, y) @ e(1, p) @ e(0, r)


def naive_urdf_fk(text: str, values: dict[str, float]) -> dict[str, torch.Tensor]:
    """World 4x4 per link straight from the URDF spec (one joint at a time, float64)."""
    root = ET.fromstring(text)
    joints = root.findall("joint")
    world = {}
    children = {j.find("child").get("link") for j in joints}
    for link in root.findall("link"):
        if link.get("name") not in children:
            world[link.get("name")] = torch.eye(4, dtype=torch.float64)
    pending = list(joints)
    while pending:
        j = pending.pop(0)
        par = j.find("parent").get("link")
        if par not in world:
            pending.append(j)
            continue
        org = j.find("origin")
        xyz = [float(v) for v in (org.get("xyz", "0 0 0") if org is not None else "0 0 0").split()]
        rpy = [float(v) for v in (org.get("rpy", "0 0 0") if org is not None else "0 0 0").split()]
        T = torch.eye(4, dtype=torch.float64)
        T[:3, :3] = _rpy(*rpy)
        T[:3, 3] = torch.tensor(xyz, dtype=torch.float64)
        name, jt = j.get("name"), j.get("type")
        M = torch.eye(4, dtype=torch.float64)
        ax_el = j.find("axis")
        axis = torch.tensor([float(v) for v in (ax_el.get("xyz") if ax_el is not None else "1 0 0").split()], dtype=torch.float64)
        axis = axis / axis.norm()
        mim = j.find("mimic")
        if mim is not None:
            v = float(mim.get("multiplier", "1")) * values[mim.get("joint")] + float(mim.get("offset", "0"))
        else:
            v = values.get(name, 0.0)
        if jt in ("revolute", "continuous"):
            K = tf.skew(axis)
            M[:3, :3] = torch.eye(3, dtype=torch.float64) + math.sin(v) * K + (1 - math.cos(v)) * K @ K
        elif jt == "prismatic":
            M[:3, 3] = v * axis
        elif jt == "floating":
            Rf = _rpy(0, 0, 0)
            for k, c in enumerate("xyz"):
                Rf = Rf @ tf.axis_angle_to_matrix(torch.eye(3, dtype=torch.float64)[k], torch.tensor(values[f"{name}_r{c}"], dtype=torch.float64))
            M[:3, :3] = Rf
            M[:3, 3] = torch.tensor([values[f"{name}_t{c}"] for c in "xyz"], dtype=torch.float64)
        world[j.find("child").get("link")] = world[par] @ T @ M
    return world


@pytest.fixture
def robot_file(tmp_path):
    p = tmp_path / "t.urdf"
    p.write_text(ROBOT)
    return p


def test_load_urdf_matches_naive_reference(robot_file):
    model = kf.io.load_urdf(robot_file, dtype=torch.float64)
    assert "world" not in model.body_names and "base" in model.body_names
    assert model.topology.dependent_names == ("mim",)
    lo, hi = model.coordinate_limits()
    i = model.topology.coordinate_index("rev")
    assert (float(lo[i]), float(hi[i])) == (-1.5, 2.0)
    assert math.isinf(float(hi[model.topology.coordinate_index("cont")]))
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        q = 0.7 * torch.randn(model.topology.n_coordinates, generator=g, dtype=torch.float64)
        ref = naive_urdf_fk(ROBOT, dict(zip(model.coordinate_names, q.tolist())))
        P = kf.fk(model, q)
        for b, name in enumerate(model.body_names):
            torch.testing.assert_close(P.R[b], ref[name][:3, :3], rtol=0, atol=1e-12)
            torch.testing.assert_close(P.t[b], ref[name][:3, 3], rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.tuples(*[st.floats(-3.1, 3.1)] * 3))
def test_rpy_is_fixed_axis_and_round_trips(rpy):
    e = rpy_to_euler_xyz(rpy)
    torch.testing.assert_close(tf.euler_xyz_to_matrix(torch.tensor(e, dtype=torch.float64)), _rpy(*rpy), rtol=0, atol=1e-12)
    back = euler_xyz_to_rpy(e)
    torch.testing.assert_close(_rpy(*back), _rpy(*rpy), rtol=0, atol=1e-9)


def test_save_load_round_trip_lower_body(tmp_path):
    model = kf.models.lower_body("cmu", dtype=torch.float64)
    p = tmp_path / "lb.urdf"
    kf.io.save_urdf(model, p)
    back = kf.io.load_urdf(p, dtype=torch.float64)
    assert back.body_names == model.body_names
    assert back.coordinate_names == model.coordinate_names
    lo, hi = model.coordinate_limits()
    lo2, hi2 = back.coordinate_limits()
    torch.testing.assert_close(lo2[6:], lo[6:])  # legs keep their limits
    q = model.default_q() + 0.5 * torch.randn(6, 18, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    P, P2 = kf.fk(model, q), kf.fk(back, q)
    torch.testing.assert_close(P2.R, P.R, rtol=0, atol=1e-12)
    torch.testing.assert_close(P2.t, P.t, rtol=0, atol=1e-12)


def test_save_load_round_trip_frames_and_couplers(tmp_path):
    mb = kf.ModelBuilder("frames")
    mb.add_body("a", kf.Joint.ball("b1", "ground", ("x", "y", "z"), parent_location=(0.1, 0, 0), parent_orientation=(0.4, -0.3, 0.2),
                                   child_location=(0.0, 0.1, 0.2), child_orientation=(0.5, 0.1, -0.6)))
    mb.add_body("w", kf.Joint.weld("wj", "a", parent_location=(0.0, 0.3, 0.0), parent_orientation=(0.1, 0.2, 0.3),
                                   child_location=(0.01, 0.0, 0.02), child_orientation=(-0.2, 0.0, 0.4)))
    mb.add_body("c", kf.Joint("cj", "w", rotations=(kf.Dof((0, 0, 1), "k"),), translations=(kf.Dof((1, 0, 0), "kd"),)))
    mb.add_coupler("kd", "k", kf.functions.Linear(0.1, 0.02))
    model = mb.build(dtype=torch.float64)
    p = tmp_path / "f.urdf"
    kf.io.save_urdf(model, p)
    back = kf.io.load_urdf(p, dtype=torch.float64)
    q = torch.randn(5, model.topology.n_coordinates, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    idx = [model.coordinate_names.index(c) for c in back.coordinate_names]
    P, P2 = kf.fk(model, q), kf.fk(back, q[:, idx])
    bi = [back.body_names.index(b) for b in model.body_names]
    torch.testing.assert_close(P2.R[:, bi], P.R, rtol=0, atol=1e-12)
    torch.testing.assert_close(P2.t[:, bi], P.t, rtol=0, atol=1e-12)


def test_save_urdf_refuses_inexpressible_models(tmp_path):
    mb = kf.ModelBuilder("s")
    mb.add_body("a", kf.Joint("j", "ground", translations=(kf.Dof((1, 0, 0), "u", kf.functions.Polynomial((1.0, 0.0, 0.0))),)))
    with pytest.raises(UrdfError, match="polynomial"):
        kf.io.save_urdf(mb.build(), tmp_path / "x.urdf")
    m = kf.models.lower_body()
    with pytest.raises(UrdfError, match="scale"):
        kf.io.save_urdf(m.replace(global_scale=torch.tensor(1.1)), tmp_path / "y.urdf")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda s: s.replace('type="prismatic"', 'type="planar"'), "planar"),
        (lambda s: s.replace('<parent link="l2"/>', '<parent link="nope"/>'), "unknown link 'nope'"),
        (lambda s: s.replace('joint="rev"', 'joint="ghost"'), "unknown joint 'ghost'"),
        (lambda s: s.replace('<axis xyz="0 0 1"/>', '<axis xyz="0 0 0"/>', 1), "axis"),
        (lambda s: s.replace('xyz="0.2 0 -0.1"', 'xyz="0.2 zero -0.1"'), "origin xyz"),
        (lambda s: s.replace("<robot", "<robo").replace("</robot>", "</robo>"), "<robot>"),
        (lambda s: s.replace("</robot>", '<link name="stray"/></robot>'), "one root link"),
        (lambda s: s.replace("</robot>", ""), "XML"),
    ],
)
def test_bad_urdf_errors_name_file_and_item(tmp_path, edit, match):
    p = tmp_path / "bad.urdf"
    p.write_text(edit(ROBOT))
    with pytest.raises(UrdfError, match=match) as e:
        kf.io.load_urdf(p)
    assert str(p) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(UrdfError, match="file not found"):
        kf.io.load_urdf(tmp_path / "nothing.urdf")


def test_against_pytorch_kinematics(tmp_path, robot_file):
    pk = pytest.importorskip("pytorch_kinematics")
    model = kf.models.lower_body("cmu", dtype=torch.float64)
    p = tmp_path / "lb.urdf"
    kf.io.save_urdf(model, p)
    chain = pk.build_chain_from_urdf(p.read_bytes()).to(dtype=torch.float64)
    names = chain.get_joint_parameter_names()
    q = model.default_q() + 0.5 * torch.randn(4, 18, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = chain.forward_kinematics(q[:, [model.coordinate_names.index(n) for n in names]])
    P = kf.fk(model, q)
    for b, name in enumerate(model.body_names):
        T = out[name].get_matrix()
        # pytorch_kinematics parses URDF numbers in float32: ~1e-8 m
        torch.testing.assert_close(T[:, :3, :3], P.R[:, b], rtol=0, atol=1e-6)
        torch.testing.assert_close(T[:, :3, 3], P.t[:, b], rtol=0, atol=1e-6)
