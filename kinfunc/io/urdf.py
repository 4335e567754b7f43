"""URDF import/export: :func:`load_urdf` (file -> :class:`~kinfunc.Model`) and :func:`save_urdf`.

URDF semantics used here (ROS wiki "urdf/XML/joint"):

* a joint's pose in its parent link is ``<origin xyz rpy>``; ``rpy`` are *fixed-axis*
  roll-pitch-yaw, ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``; the child link's frame is the joint
  frame moved by the joint: ``T_parent_child(q) = T(origin) @ M(q)``;
* ``revolute``/``continuous`` rotate about ``<axis xyz>`` (joint frame, default ``1 0 0``) by
  ``q`` rad; ``prismatic`` translates along it by ``q`` m; ``fixed`` welds; ``floating`` gets six
  coordinates (``<joint>_tx, _ty, _tz`` along the joint frame's axes, then rotations
  ``<joint>_rx, _ry, _rz`` applied successively about X, Y, Z); ``planar`` is not supported;
* ``<limit lower upper>`` become coordinate ranges (continuous and floating are unbounded);
* ``<mimic joint multiplier offset>`` makes the joint's value ``multiplier * q_joint + offset``
  (a coupler: the mimic joint is a dependent coordinate, not an FK input).

Mapping onto kinfunc joints: each link except the root becomes a body; its joint's
``parent_location`` is ``xyz`` and ``parent_orientation`` the body-fixed XYZ Euler angles of
the ``rpy`` rotation; the child frame is the identity. A root link named ``world`` or
``ground`` is the ground frame itself; any other root link becomes a body welded to ground.
Chains of bare links (no inertial, visual or collision element, one child) whose joints form
one OpenSim-style joint (translations first, then at most three rotations, identity origins
in between, optionally a final fixed joint) are merged into one body -- which is exactly what
:func:`save_urdf` writes for a multi-DOF joint, so ``load_urdf(save_urdf(model))`` reproduces
``model``'s bodies and coordinates.
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Optional, Union

import torch

from .. import functions as F
from .. import transforms as tf
from ..model import GROUND, Dof, Joint, Model, ModelBuilder, ModelError
from ._xml import parse_xml

__all__ = ["load_urdf", "save_urdf", "UrdfError", "rpy_to_euler_xyz", "euler_xyz_to_rpy"]

PathLike = Union[str, "os.PathLike[str]"]


class UrdfError(ModelError):
    """A URDF file cannot be read or a model cannot be written as URDF (message names the item)."""


def _rpy_matrix(rpy: tuple[float, float, float]) -> torch.Tensor:
    r, p, y = (torch.tensor(float(v), dtype=torch.float64) for v in rpy)

    def rot(axis: int, a: torch.Tensor) -> torch.Tensor:
        return tf.axis_angle_to_matrix(torch.eye(3, dtype=torch.float64)[axis], a)

    return rot(2, y) @ rot(1, p) @ rot(0, r)


def rpy_to_euler_xyz(rpy: tuple[float, float, float]) -> tuple[float, float, float]:
    """URDF fixed-axis roll-pitch-yaw (``Rz(y) Ry(p) Rx(r)``) -> body-fixed XYZ Euler (rad)."""
    e = tf.matrix_to_euler_xyz(_rpy_matrix(rpy))
    return tuple(float(v) for v in e)  # type: ignore[return-value]


def euler_xyz_to_rpy(euler: tuple[float, float, float]) -> tuple[float, float, float]:
    """Body-fixed XYZ Euler (``Rx(a) Ry(b) Rz(c)``) -> URDF roll-pitch-yaw (rad)."""
    R = tf.euler_xyz_to_matrix(torch.tensor(euler, dtype=torch.float64))
    # R = Rz(y) Ry(p) Rx(r): R[2,0] = -sin p, R[2,1] = cos p sin r, R[2,2] = cos p cos r,
    # R[1,0] = sin y cos p, R[0,0] = cos y cos p
    p = math.asin(max(-1.0, min(1.0, -float(R[2, 0]))))
    if abs(math.cos(p)) > 1e-9:
        r = math.atan2(float(R[2, 1]), float(R[2, 2]))
        y = math.atan2(float(R[1, 0]), float(R[0, 0]))
    else:  # gimbal lock: put everything in yaw
        r = 0.0
        y = math.atan2(-float(R[0, 1]), float(R[1, 1]))
    return (r, p, y)


# ----------------------------------------------------------------------------------------
# reading


@dataclass
class _UJoint:
    name: str
    type: str
    parent: str
    child: str
    xyz: tuple[float, float, float]
    rpy: tuple[float, float, float]
    axis: tuple[float, float, float]
    lower: float
    upper: float
    mimic: Optional[tuple[str, float, float]]


@dataclass
class _ULink:
    name: str
    bare: bool
    children: list[str] = field(default_factory=list)  # joint names


def _floats(text: Optional[str], n: int, default: tuple[float, ...], where: str) -> tuple[float, ...]:
    if text is None:
        return default
    parts = text.split()
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        raise UrdfError(f"{where}: expected {n} numbers, got '{text}'") from None
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise UrdfError(f"{where}: expected {n} finite numbers, got '{text}'")
    return vals


def _parse(path: PathLike) -> tuple[str, dict[str, _ULink], dict[str, _UJoint], list[str]]:
    p = os.fspath(path)
    root = parse_xml(p, UrdfError)
    if root.tag != "robot":
        raise UrdfError(f"{p}: root element is <{root.tag}>, expected <robot>")
    links: dict[str, _ULink] = {}
    for el in root.findall("link"):
        name = el.get("name")
        if not name:
            raise UrdfError(f"{p}: a <link> has no name attribute; give every link a unique name")
        if name in links:
            raise UrdfError(f"{p}: duplicate link '{name}'; link names must be unique")
        bare = not any(el.find(t) is not None for t in ("inertial", "visual", "collision"))
        links[name] = _ULink(name, bare)
    joints: dict[str, _UJoint] = {}
    order: list[str] = []
    for el in root.findall("joint"):
        name = el.get("name")
        jtype = el.get("type")
        where = f"{p}: joint '{name}'"
        if not name or not jtype:
            raise UrdfError(f"{p}: a <joint> lacks a name or type attribute")
        if name in joints:
            raise UrdfError(f"{where}: duplicate joint name")
        if jtype not in ("revolute", "continuous", "prismatic", "fixed", "floating"):
            raise UrdfError(
                f"{where}: type '{jtype}' is not supported (revolute, continuous, prismatic, fixed, floating); "
                "replace it (a planar joint = two prismatic + one revolute joint)"
            )
        par, chi = el.find("parent"), el.find("child")
        if par is None or chi is None or not par.get("link") or not chi.get("link"):
            raise UrdfError(f"{where}: needs <parent link=.../> and <child link=.../>")
        parent, child = par.get("link"), chi.get("link")
        for ln in (parent, child):
            if ln not in links:
                raise UrdfError(f"{where}: names unknown link '{ln}'; add a <link name='{ln}'/>")
        org = el.find("origin")
        xyz = _floats(None if org is None else org.get("xyz"), 3, (0.0, 0.0, 0.0), f"{where} <origin xyz>")
        rpy = _floats(None if org is None else org.get("rpy"), 3, (0.0, 0.0, 0.0), f"{where} <origin rpy>")
        ax = el.find("axis")
        axis = _floats(None if ax is None else ax.get("xyz"), 3, (1.0, 0.0, 0.0), f"{where} <axis xyz>")
        if jtype in ("revolute", "continuous", "prismatic") and sum(a * a for a in axis) < 1e-24:
            raise UrdfError(f"{where}: <axis xyz> is zero; give a direction")
        lower, upper = -math.inf, math.inf
        lim = el.find("limit")
        if jtype in ("revolute", "prismatic"):
            if lim is None:
                raise UrdfError(f"{where}: a {jtype} joint needs <limit lower=... upper=...> (URDF requires it)")
            lower = float(lim.get("lower", "0"))
            upper = float(lim.get("upper", "0"))
            if lower > upper:
                raise UrdfError(f"{where}: <limit> lower {lower} > upper {upper}")
        mim = el.find("mimic")
        mimic = None
        if mim is not None:
            if jtype not in ("revolute", "continuous", "prismatic"):
                raise UrdfError(f"{where}: <mimic> on a {jtype} joint; only 1-DOF joints can mimic")
            mimic = (mim.get("joint", ""), float(mim.get("multiplier", "1")), float(mim.get("offset", "0")))
        joints[name] = _UJoint(name, jtype, parent, child, xyz, rpy, axis, lower, upper, mimic)  # type: ignore[arg-type]
        order.append(name)
    child_of: dict[str, str] = {}
    for j in joints.values():
        if j.child in child_of:
            raise UrdfError(f"{p}: link '{j.child}' is the child of joints '{child_of[j.child]}' and '{j.name}'")
        child_of[j.child] = j.name
        links[j.parent].children.append(j.name)
    roots = [n for n in links if n not in child_of]
    if len(roots) != 1:
        raise UrdfError(f"{p}: expected exactly one root link (a link that is no joint's child), found {roots}")
    for j in joints.values():
        if j.mimic is not None and j.mimic[0] not in joints:
            raise UrdfError(f"{p}: joint '{j.name}' mimics unknown joint '{j.mimic[0]}'")
    return root.get("name", "urdf"), links, joints, roots


def _identity(j: _UJoint) -> bool:
    return all(v == 0.0 for v in j.xyz + j.rpy)


def load_urdf(path: PathLike, dtype: torch.dtype = torch.float32, device=None) -> Model:
    """Read a URDF file into a :class:`~kinfunc.Model` (see the module docstring for the mapping).

    Coordinates are named after the joints that define them (rad for revolute/continuous, m for
    prismatic); ``<limit>`` gives their ranges; mimic joints become couplers. Raises
    :class:`UrdfError` (a ``ValueError``) naming the file and element on bad input.
    """
    p = os.fspath(path)
    name, links, joints, roots = _parse(p)
    root = roots[0]
    mb = ModelBuilder(name)
    ground_alias = root if root in ("world", GROUND) else None
    body_of: dict[str, str] = {}  # URDF link -> kinfunc body name
    if ground_alias is None:
        mb.add_body(root, Joint.weld(f"{root}_to_ground", GROUND))
        body_of[root] = root
    else:
        body_of[root] = GROUND
    mimic_dependents: set[str] = {j.name for j in joints.values() if j.mimic is not None}
    declared: set[str] = set()

    def declare(coord: str, lo: float, hi: float) -> None:
        if coord in declared or coord in mimic_dependents:
            return
        default = min(max(0.0, lo), hi)
        mb.add_coordinate(coord, default, (lo, hi))
        declared.add(coord)

    # walk the tree from the root (document order), merging chains of bare links into one joint
    def visit(link: str) -> None:
        for jn in links[link].children:
            chain = [joints[jn]]
            # extend the chain through bare intermediate links while it stays one custom joint
            while True:
                last = chain[-1]
                lk = links[last.child]
                if not lk.bare or len(lk.children) != 1 or last.type in ("fixed", "floating"):
                    break
                nxt = joints[lk.children[0]]
                if not _mergeable(chain, nxt):
                    break
                chain.append(nxt)
            end_link = chain[-1].child
            mb.add_body(end_link, _custom_joint(p, chain, body_of[link], declare))
            body_of[end_link] = end_link
            for j in chain:
                if j.mimic is not None:
                    target, mult, off = j.mimic
                    if joints[target].mimic is not None:
                        raise UrdfError(f"{p}: joint '{j.name}' mimics '{target}', itself a mimic joint; not supported")
                    mb.add_coupler(j.name, target, F.Linear(mult, off))
            visit(end_link)

    visit(root)
    try:
        return mb.build(dtype=dtype, device=device)
    except ModelError as e:
        raise UrdfError(f"{p}: {e}") from None


def _mergeable(chain: list[_UJoint], nxt: _UJoint) -> bool:
    if not _identity(nxt) and nxt.type != "fixed":
        return False
    kinds = [j.type for j in chain]
    n_rot = sum(k in ("revolute", "continuous") for k in kinds)
    n_tra = sum(k == "prismatic" for k in kinds)
    if nxt.type == "fixed":
        return n_rot + n_tra > 0  # a final frame offset: becomes the child frame
    if nxt.type == "floating":
        return False
    if nxt.type == "prismatic":
        return n_rot == 0 and n_tra < 3  # translations come first in M(q)
    return n_rot < 3


def _custom_joint(path: str, chain: list[_UJoint], parent_body: str, declare) -> Joint:
    first = chain[0]
    child_loc = (0.0, 0.0, 0.0)
    child_ori = (0.0, 0.0, 0.0)
    moving = chain
    if len(chain) > 1 and chain[-1].type == "fixed":
        # T = origin(first) M(q) T(last fixed); child frame = T(last fixed)^-1
        fx = chain[-1]
        Rf = _rpy_matrix(fx.rpy)
        tf_ = torch.tensor(fx.xyz, dtype=torch.float64)
        Rinv = Rf.T
        child_loc = tuple(float(v) for v in -(Rinv @ tf_))  # type: ignore[assignment]
        child_ori = tuple(float(v) for v in tf.matrix_to_euler_xyz(Rinv))  # type: ignore[assignment]
        moving = chain[:-1]
    frames = dict(
        parent_location=first.xyz,
        parent_orientation=rpy_to_euler_xyz(first.rpy),
        child_location=child_loc,
        child_orientation=child_ori,
    )
    if first.type == "fixed":
        return Joint.weld(first.name, parent_body, **frames)
    if first.type == "floating":
        n = first.name
        for c in ("tx", "ty", "tz", "rx", "ry", "rz"):
            declare(f"{n}_{c}", -math.inf, math.inf)
        eye = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
        rots = tuple(Dof(eye[k], f"{n}_r{'xyz'[k]}") for k in range(3))
        trans = tuple(Dof(eye[k], f"{n}_t{'xyz'[k]}") for k in range(3))
        return Joint(n, parent_body, rotations=rots, translations=trans, **frames)
    rots, trans = [], []
    for j in moving:
        lo, hi = (j.lower, j.upper) if j.type != "continuous" else (-math.inf, math.inf)
        declare(j.name, lo, hi)
        d = Dof(j.axis, j.name)
        (trans if j.type == "prismatic" else rots).append(d)
    name = moving[-1].name if len(moving) == 1 else "+".join(j.name for j in moving)
    return Joint(name, parent_body, rotations=tuple(rots), translations=tuple(trans), **frames)


# ----------------------------------------------------------------------------------------
# writing


def _fmt(v: tuple[float, ...]) -> str:
    return " ".join(repr(float(x)) for x in v)


def save_urdf(model: Model, path: PathLike) -> None:
    """Write ``model``'s kinematic tree as URDF (bodies -> links, each slot -> a 1-DOF joint).

    A joint with several slots becomes a chain through bare links ``<body>__<k>``:
    prismatic joints for the translation slots, then revolute joints for the rotation slots
    (``continuous`` where the coordinate is unbounded), then a fixed joint if the child frame is
    not the identity. The first joint driven by a coordinate carries its name and limits; any
    other slot driven by the same (or a coupled) coordinate is a ``<mimic>`` joint. Markers are
    are not written (URDF has no markers).

    Expressible models: every slot a constant or a ``Linear`` function (couplers ``Linear`` of
    an independent coordinate), all scales 1 (apply scaling to the geometry first). Anything
    else raises :class:`UrdfError` naming the joint and slot.
    """
    p = os.fspath(path)
    topo = model.topology
    m = model.to(dtype=torch.float64, device="cpu")
    if not bool(torch.all(m.body_scales == 1.0)) or float(m.global_scale) != 1.0:
        raise UrdfError(f"save_urdf({p}): model '{topo.name}' has non-unit scales; URDF has no scale, write an unscaled model")
    # slot functions: (coordinate index in full vector or None, slope, intercept)
    slot_fn: dict[tuple[int, int], tuple[Optional[int], float, float]] = {}
    for g, params in zip(topo.slot_groups, m.slot_params):
        kind = g.key[0]
        for k, (out, inp) in enumerate(zip(g.outputs, g.inputs)):
            b, s = divmod(out, 6)
            if kind is F.FnKind.CONSTANT:
                slot_fn[(b, s)] = (None, 0.0, float(params[0][k]))
            elif kind is F.FnKind.LINEAR:
                slot_fn[(b, s)] = (inp, float(params[0][k]), float(params[1][k]))
            else:
                raise UrdfError(
                    f"save_urdf({p}): joint '{topo.joint_names[b]}' slot {s} is a {kind.value} function; "
                    "URDF joints are linear in their coordinate"
                )
    C = topo.n_coordinates
    dep_fn: dict[int, tuple[int, float, float]] = {}
    for g, params in zip(topo.coupler_groups, m.coupler_params):
        if g.key[0] is not F.FnKind.LINEAR:
            raise UrdfError(f"save_urdf({p}): coupler of kind {g.key[0].value} is not expressible as a URDF mimic")
        for k, (out, inp) in enumerate(zip(g.outputs, g.inputs)):
            dep_fn[C + out] = (inp, float(params[0][k]), float(params[1][k]))
    all_names = topo.coordinate_names + topo.dependent_names
    primary: dict[int, tuple[int, int]] = {}  # independent coordinate -> (body, slot) carrying it

    robot = ET.Element("robot", name=topo.name)
    ET.SubElement(robot, "link", name=GROUND)
    for b in range(topo.n_bodies):
        ET.SubElement(robot, "link", name=topo.body_names[b]).append(_inertial())
    def add_joint(name, jtype, parent, child, xyz=(0.0, 0.0, 0.0), rpy=(0.0, 0.0, 0.0), axis=None, limits=None, mimic=None):
        j = ET.SubElement(robot, "joint", name=name, type=jtype)
        ET.SubElement(j, "parent", link=parent)
        ET.SubElement(j, "child", link=child)
        ET.SubElement(j, "origin", xyz=_fmt(xyz), rpy=_fmt(rpy))
        if axis is not None:
            ET.SubElement(j, "axis", xyz=_fmt(axis))
        if limits is not None:
            ET.SubElement(j, "limit", lower=repr(limits[0]), upper=repr(limits[1]), effort="0", velocity="0")
        if mimic is not None:
            ET.SubElement(j, "mimic", joint=mimic[0], multiplier=repr(mimic[1]), offset=repr(mimic[2]))

    # the first identity slot of each coordinate carries it (mimic targets may come later in the file)
    for b in range(topo.n_bodies):
        for s in list(range(3, 6)) + list(range(3)):
            fn = slot_fn.get((b, s))
            if fn is not None and fn[0] is not None and fn[0] < C and fn[1:] == (1.0, 0.0) and fn[0] not in primary:
                primary[fn[0]] = (b, s)
    primary_name = {inp: all_names[inp] for inp in primary}

    for b in range(topo.n_bodies):
        body = topo.body_names[b]
        jname = topo.joint_names[b]
        parent = GROUND if topo.parents[b] < 0 else topo.body_names[topo.parents[b]]
        steps = []  # (jtype, axis, value spec)
        for s in list(range(3, 6)) + list(range(3)):
            if (b, s) not in slot_fn:
                continue
            axis = tuple(float(v) for v in m.axes[b, s])
            steps.append(("prismatic" if s >= 3 else "revolute", axis, slot_fn[(b, s)], s))
        child_loc = tuple(float(v) for v in m.child_location[b])
        child_ori = tuple(float(v) for v in m.child_orientation[b])
        has_child_frame = any(v != 0.0 for v in child_loc + child_ori)
        n_links = len(steps) + (1 if has_child_frame else 0)
        origin_xyz = tuple(float(v) for v in m.parent_location[b])
        origin_rpy = euler_xyz_to_rpy(tuple(float(v) for v in m.parent_orientation[b]))
        cur = parent
        if not steps:  # weld: one fixed joint with origin T(parent frame) T(child frame)^-1
            Rp_ = tf.euler_xyz_to_matrix(m.parent_orientation[b])
            Rc_ = tf.euler_xyz_to_matrix(m.child_orientation[b])
            R_ = Rp_ @ Rc_.T
            t_ = m.parent_location[b] - R_ @ m.child_location[b]
            rpy_ = euler_xyz_to_rpy(tuple(float(v) for v in tf.matrix_to_euler_xyz(R_)))
            add_joint(jname, "fixed", parent, body, tuple(float(v) for v in t_), rpy_)
            continue
        for k, (jtype, axis, (inp, slope, icpt), s) in enumerate(steps):
            nxt = body if k == n_links - 1 else f"{body}__{k}"
            if nxt != body:
                ET.SubElement(robot, "link", name=nxt)
            xyz, rpy = (origin_xyz, origin_rpy) if k == 0 else ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
            if inp is None:  # constant slot: a fixed offset needs a joint in the chain
                raise UrdfError(
                    f"save_urdf({p}): joint '{jname}' slot {s} is a nonzero constant; fold it into the joint frames"
                )
            if inp >= C:  # coupled coordinate
                base, mult, off = dep_fn[inp]
                inp, slope, icpt = base, slope * mult, slope * off + icpt
            cname = all_names[inp]
            lo, hi = topo.coordinate_ranges[inp]
            if primary.get(inp) == (b, s):
                bounded = math.isfinite(lo) and math.isfinite(hi)
                t = jtype if (bounded or jtype == "prismatic") else "continuous"
                lim = (lo if math.isfinite(lo) else -1e9, hi if math.isfinite(hi) else 1e9) if t != "continuous" else None
                add_joint(cname, t, cur, nxt, xyz, rpy, axis, lim)
            else:
                if inp not in primary:
                    raise UrdfError(
                        f"save_urdf({p}): coordinate '{cname}' drives joint '{jname}' slot {s} only through "
                        f"{slope} * q + {icpt}; URDF needs one plain joint for it (re-parameterise the model)"
                    )
                t = "revolute" if jtype == "revolute" else "prismatic"
                add_joint(f"{cname}__{jname}_{s}", t, cur, nxt, xyz, rpy, axis, (-1e9, 1e9), (primary_name[inp], slope, icpt))
            cur = nxt
        if has_child_frame:
            Rc = tf.euler_xyz_to_matrix(torch.tensor(child_ori, dtype=torch.float64))
            tc = torch.tensor(child_loc, dtype=torch.float64)
            Rinv = Rc.T
            inv_xyz = tuple(float(v) for v in -(Rinv @ tc))
            inv_rpy = euler_xyz_to_rpy(tuple(float(v) for v in tf.matrix_to_euler_xyz(Rinv)))
            add_joint(f"{jname}__child_frame", "fixed", cur, body, inv_xyz, inv_rpy)
    ET.indent(robot)
    ET.ElementTree(robot).write(p, encoding="unicode", xml_declaration=True)


def _inertial() -> ET.Element:
    """A unit placeholder inertia (some parsers, e.g. Pinocchio, want one on real bodies)."""
    el = ET.Element("inertial")
    ET.SubElement(el, "origin", xyz="0 0 0", rpy="0 0 0")
    ET.SubElement(el, "mass", value="1.0")
    ET.SubElement(el, "inertia", ixx="0.01", ixy="0", ixz="0", iyy="0.01", iyz="0", izz="0.01")
    return el
