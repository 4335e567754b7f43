"""OpenSim model files (``.osim``, OpenSim 4.x layout): :func:`load_osim`, :func:`save_osim`.

Only what moves markers is read: bodies, frames (``PhysicalOffsetFrame`` chains are folded into
each joint's twelve frame parameters), joints, coordinates, coordinate couplers and markers.
Muscles, forces, geometry, wrap objects, contact, probes and controllers are ignored (one
``logging`` line lists what was skipped). Anything that changes kinematics and cannot be
represented raises :class:`~kinfunc.ModelError` naming the file and the element.

Joint types map onto the core's CustomJoint slots (axes in the joint frames, as OpenSim 4.6
builds them; checked against OpenSim itself in ``tests/test_osim.py``):

============== ==================================================================
``CustomJoint`` its SpatialTransform, slot for slot
``PinJoint``    rotation about Z
``SliderJoint`` translation along X
``WeldJoint``   nothing
``UniversalJoint`` rotations about X then Y
``BallJoint`` / ``GimbalJoint`` rotations about X, Y, Z (body-fixed sequence)
``FreeJoint``   rotations about X, Y, Z, translations along X, Y, Z
``PlanarJoint`` rotation about Z, translations along X, Y
============== ==================================================================
"""
from __future__ import annotations

import logging
import math
import posixpath
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from .. import functions as F
from ..fk import effective_scales, translation_scales
from ..model import GROUND, Dof, Joint, Model, ModelBuilder, ModelError
from ._xml import parse_xml

__all__ = ["load_osim", "save_osim"]

log = logging.getLogger("kinfunc.io.osim")

PathLike = Union[str, Path]

_X, _Y, _Z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
_FRAME_TAGS = {"PhysicalOffsetFrame", "Body", "Ground"}
_FUNCTION_TAGS = {
    "Constant",
    "LinearFunction",
    "SimmSpline",
    "NaturalCubicSpline",
    "PolynomialFunction",
    "MultiplierFunction",
}
# (rotation axes, translation axes) of the fixed-axis joint types, in coordinate order
_JOINT_AXES: dict[str, tuple[tuple[tuple[float, float, float], ...], tuple[tuple[float, float, float], ...]]] = {
    "PinJoint": ((_Z,), ()),
    "SliderJoint": ((), (_X,)),
    "WeldJoint": ((), ()),
    "UniversalJoint": ((_X, _Y), ()),
    "BallJoint": ((_X, _Y, _Z), ()),
    "GimbalJoint": ((_X, _Y, _Z), ()),
    "FreeJoint": ((_X, _Y, _Z), (_X, _Y, _Z)),
    "PlanarJoint": ((_Z,), (_X, _Y)),
}
_SUPPORTED_JOINTS = ("CustomJoint",) + tuple(_JOINT_AXES)


# --------------------------------------------------------------------------- small helpers
def _rot_xyz(e: np.ndarray) -> np.ndarray:
    """Body-fixed X-Y-Z Euler angles (rad) -> rotation matrix ``Rx @ Ry @ Rz``."""
    a, b, c = e
    ca, sa, cb, sb, cc, sc = math.cos(a), math.sin(a), math.cos(b), math.sin(b), math.cos(c), math.sin(c)
    Rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    Ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    Rz = np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]])
    return Rx @ Ry @ Rz


def _euler_xyz(R: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`_rot_xyz` (``b`` in [-pi/2, pi/2])."""
    b = math.asin(max(-1.0, min(1.0, R[0, 2])))
    if abs(R[1, 2]) < 1e-12 and abs(R[2, 2]) < 1e-12:  # gimbal lock: put it all in c
        return 0.0, b, math.atan2(R[1, 0], R[1, 1])
    return math.atan2(-R[1, 2], R[2, 2]), b, math.atan2(-R[0, 1], R[0, 0])


def _fmt(values) -> str:
    return " ".join(repr(float(v)) for v in values)


class _Doc:
    """A parsed .osim document: component paths, frames, error context."""

    def __init__(self, path: Path, root: ET.Element) -> None:
        self.path = path
        self.root = root
        model = root.find("Model")
        if model is None:
            raise ModelError(f"{path}: no <Model> element under <{root.tag}>; is this an OpenSim .osim file?")
        self.model = model
        self.by_path: dict[str, ET.Element] = {}
        self.path_of: dict[int, str] = {}
        self.by_name: dict[str, list[str]] = {}
        self._index(model, "")

    def _index(self, el: ET.Element, prefix: str) -> None:
        for child in el:
            name = child.get("name")
            if name is not None and child is not self.model:
                p = f"{prefix}/{name}"
                if child.tag in _FRAME_TAGS:
                    self.by_path[p] = child
                    self.path_of[id(child)] = p
                    self.by_name.setdefault(name, []).append(p)
                else:
                    self.path_of[id(child)] = p
                self._index(child, p)
            else:
                self._index(child, prefix)

    def err(self, what: str) -> ModelError:
        return ModelError(f"{self.path}: {what}")

    def text(self, el: ET.Element, tag: str, default: Optional[str] = None) -> Optional[str]:
        c = el.find(tag)
        if c is None or c.text is None:
            return default
        return c.text.strip()

    def floats(self, el: ET.Element, tag: str, n: Optional[int], default=None, where: str = "") -> list[float]:
        s = self.text(el, tag)
        if s is None or s == "":
            if default is not None:
                return list(default)
            raise self.err(f"{where}: missing <{tag}>; add it")
        try:
            vals = [float(v) for v in s.split()]
        except ValueError:
            raise self.err(f"{where}: <{tag}> '{s}' is not a list of numbers") from None
        if n is not None and len(vals) != n:
            raise self.err(f"{where}: <{tag}> needs {n} numbers, got {len(vals)} ('{s}')")
        if not all(math.isfinite(v) for v in vals):
            raise self.err(f"{where}: <{tag}> has non-finite values ('{s}')")
        return vals

    def flag(self, el: ET.Element, tag: str, default: bool = False) -> bool:
        s = self.text(el, tag)
        if s is None or s == "":
            return default
        return s.lower() in ("true", "1", "yes")

    def resolve(self, owner: str, ref: str, where: str) -> str:
        """Absolute path of the frame that socket value ``ref`` (of component ``owner``) names."""
        ref = ref.strip()
        if not ref:
            raise self.err(f"{where}: empty frame reference; name a body or frame")
        cand = posixpath.normpath(ref if ref.startswith("/") else f"{owner}/{ref}")
        if cand in self.by_path:
            return cand
        # OpenSim also accepts paths relative to the owner's parent and bare unique names
        cand2 = posixpath.normpath(f"{posixpath.dirname(owner)}/{ref}")
        if cand2 in self.by_path:
            return cand2
        name = ref.rstrip("/").split("/")[-1]
        if name == GROUND and "/ground" in self.by_path:
            return "/ground"
        hits = self.by_name.get(name, [])
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise self.err(f"{where}: frame '{ref}' not found; known frames: {', '.join(sorted(self.by_path))}")
        raise self.err(f"{where}: frame '{ref}' is ambiguous ({', '.join(hits)}); give its full path")

    def fold(self, frame_path: str, where: str) -> tuple[str, np.ndarray, np.ndarray, list[ET.Element]]:
        """Follow a frame chain to its body: ``(body name, R (3, 3), t (3,), chain)``, frame in body."""
        R, t = np.eye(3), np.zeros(3)
        chain: list[ET.Element] = []
        p = frame_path
        seen = set()
        while True:
            el = self.by_path[p]
            if el.tag == "Ground":
                return GROUND, R, t, chain
            if el.tag == "Body":
                return el.get("name"), R, t, chain
            if p in seen:
                raise self.err(f"{where}: frame chain through '{p}' is cyclic")
            seen.add(p)
            chain.append(el)
            fw = f"frame '{p}'"
            tr = np.array(self.floats(el, "translation", 3, (0.0, 0.0, 0.0), fw))
            Ro = _rot_xyz(np.array(self.floats(el, "orientation", 3, (0.0, 0.0, 0.0), fw)))
            # T_parent_frame composed onto what we have: T_parent_target = T_parent_frame @ T_frame_target
            t = Ro @ t + tr
            R = Ro @ R
            parent_ref = self.text(el, "socket_parent")
            if parent_ref is None:
                raise self.err(f"{fw}: missing <socket_parent>; name the frame it is attached to")
            p = self.resolve(p, parent_ref, fw)

    # ------------------------------------------------------------------ functions
    def function(self, el: ET.Element, where: str) -> F.FunctionSpec:
        tag = el.tag
        if tag == "Constant":
            return F.Constant(self.floats(el, "value", 1, (0.0,), where)[0])
        if tag == "LinearFunction":
            slope, intercept = self.floats(el, "coefficients", 2, (1.0, 0.0), where)
            return F.Linear(slope, intercept)
        if tag in ("SimmSpline", "NaturalCubicSpline"):
            # OpenSim 4 reads the legacy type name NaturalCubicSpline as a SimmSpline (same end
            # conditions); checked against OpenSim 4.6 in tests/test_osim.py
            x = self.floats(el, "x", None, where=f"{where} <{tag}>")
            y = self.floats(el, "y", None, where=f"{where} <{tag}>")
            try:
                return F.Spline(x, y, F.SplineEnd.SIMM)
            except ValueError as e:
                raise self.err(f"{where} <{tag}>: {e}") from None
        if tag == "PolynomialFunction":
            return F.Polynomial(self.floats(el, "coefficients", None, (0.0,), where))
        if tag == "MultiplierFunction":
            scale = self.floats(el, "scale", 1, (1.0,), where)[0]
            holder = el.find("function")
            inner = _function_child(holder if holder is not None else el)
            if inner is None:
                raise self.err(f"{where}: <MultiplierFunction> has no inner function")
            return F.Multiplier(self.function(inner, where), scale)
        raise self.err(
            f"{where}: function <{tag}> is not supported (supported: {', '.join(sorted(_FUNCTION_TAGS))}); "
            "refit it as a SimmSpline or polynomial"
        )


def _function_child(el: ET.Element) -> Optional[ET.Element]:
    """The function element inside a TransformAxis / function holder (``None`` if absent)."""
    for c in el:
        if isinstance(c.tag, str) and c.tag not in ("coordinates", "axis", "scale", "function"):
            return c
    return None


def _objects(m: ET.Element, set_tag: str) -> list[ET.Element]:
    objs = m.find(f"{set_tag}/objects")
    return [] if objs is None else list(objs)


def _coordinates(doc: _Doc, joint_el: ET.Element) -> list[ET.Element]:
    holder = joint_el.find("coordinates")
    return [] if holder is None else [c for c in holder if c.tag == "Coordinate"]


def _spatial_transform(doc: _Doc, jname: str, jel: ET.Element) -> tuple[list[Dof], list[Dof], list[bool]]:
    st = jel.find("SpatialTransform")
    if st is None:
        raise doc.err(f"CustomJoint '{jname}': missing <SpatialTransform>")
    axes = {ta.get("name"): ta for ta in st if ta.tag == "TransformAxis"}
    dofs: list[Dof] = []
    scaled: list[bool] = []
    for k, slot in enumerate(("rotation1", "rotation2", "rotation3", "translation1", "translation2", "translation3")):
        where = f"CustomJoint '{jname}' TransformAxis '{slot}'"
        ta = axes.get(slot)
        if ta is None:
            raise doc.err(f"{where}: missing; a SpatialTransform needs all six TransformAxis entries")
        axis = tuple(doc.floats(ta, "axis", 3, None, where))
        coords = (doc.text(ta, "coordinates", "") or "").split()
        fel = _function_child(ta)
        if fel is None:
            fn: F.FunctionSpec = F.Linear() if coords else F.Constant(0.0)
        else:
            fn = doc.function(fel, where)
        if len(coords) > 1:
            raise doc.err(f"{where}: functions of several coordinates ({', '.join(coords)}) are not supported")
        if not coords:
            if not isinstance(fn, F.Constant):
                raise doc.err(f"{where}: a {type(fn).__name__} without a coordinate is not supported; use a Constant")
            dofs.append(Dof(axis, None, fn))
        else:
            dofs.append(Dof(axis, coords[0], fn))
        # OpenSim's SpatialTransform::scale leaves an identity LinearFunction (a translational DOF) alone
        identity = fel is not None and fel.tag == "LinearFunction" and fn == F.Linear(1.0, 0.0)
        identity = identity or (fel is None and bool(coords))
        scaled.append(k >= 3 and not identity)
    return dofs[:3], dofs[3:], scaled[3:]


# --------------------------------------------------------------------------- load
def load_osim(path: PathLike, dtype: torch.dtype = torch.float64, device: Any = None) -> Model:
    """Load an OpenSim 4.x ``.osim`` model as a :class:`~kinfunc.Model` (kinematics only).

    ``path``: the ``.osim`` file. Returns a model in ``dtype`` (default float64) whose body,
    coordinate, marker and joint names are OpenSim's, frame offsets folded into the joint frame
    parameters, ``body_scales = 1`` (a ScaleTool output already has its scaling baked in).
    Dependent coordinates of ``CoordinateCouplerConstraint``s are computed from their independent
    coordinate, so FK takes only independent coordinates (``model.coordinate_names``).
    Raises :class:`~kinfunc.ModelError` (a ``ValueError``) naming the file and element for anything
    kinematic it cannot represent.
    """
    path = Path(path)
    root = parse_xml(path, ModelError)
    doc = _Doc(path, root)
    m = doc.model
    for body in m.iter("Body"):
        if body.find("Joint") is not None or body.find("joint") is not None:
            raise doc.err(
                f"body '{body.get('name')}' holds its joint (OpenSim 3.x layout, document Version "
                f"{root.get('Version')}); open and save the model in OpenSim 4 to convert it"
            )
    mb = ModelBuilder(m.get("name") or path.stem)

    jointset = m.find("JointSet/objects")
    joints = [] if jointset is None else list(jointset)
    child_of: dict[str, str] = {}
    scaled_slots: dict[str, list[bool]] = {}
    for jel in joints:
        jname = jel.get("name") or "(unnamed)"
        kind = jel.tag
        where = f"{kind} '{jname}'"
        if kind not in _SUPPORTED_JOINTS:
            raise doc.err(f"{where}: joint type not supported (supported: {', '.join(_SUPPORTED_JOINTS)})")
        if doc.flag(jel, "reverse"):
            raise doc.err(f"{where}: reversed joints (<reverse>true) are not supported; swap parent and child")
        jpath = doc.path_of[id(jel)]
        pref = doc.text(jel, "socket_parent_frame") or doc.text(jel, "parent_frame")
        cref = doc.text(jel, "socket_child_frame") or doc.text(jel, "child_frame")
        if pref is None or cref is None:
            raise doc.err(f"{where}: needs <socket_parent_frame> and <socket_child_frame>")
        pbody, Rp, tp, pchain = doc.fold(doc.resolve(jpath, pref, where), where)
        cbody, Rc, tc, cchain = doc.fold(doc.resolve(jpath, cref, where), where)
        if cbody == GROUND:
            raise doc.err(f"{where}: ground is the child frame; make ground the parent")
        if cbody in child_of:
            raise doc.err(f"{where}: body '{cbody}' is already the child of joint '{child_of[cbody]}' (closed loops are not supported)")
        child_of[cbody] = jname
        po = tuple(doc.floats(pchain[0], "orientation", 3, (0, 0, 0))) if len(pchain) == 1 else _euler_xyz(Rp)
        co = tuple(doc.floats(cchain[0], "orientation", 3, (0, 0, 0))) if len(cchain) == 1 else _euler_xyz(Rc)
        frames = dict(parent_location=tuple(tp), parent_orientation=po, child_location=tuple(tc), child_orientation=co)
        coords = _coordinates(doc, jel)
        cnames = [c.get("name") for c in coords]
        if kind == "CustomJoint":
            rots, trans, scaled = _spatial_transform(doc, jname, jel)
            used = {d.coordinate for d in rots + trans if d.coordinate is not None}
            unknown = used - set(cnames)
            if unknown:
                raise doc.err(f"{where}: TransformAxis uses coordinate(s) {sorted(unknown)} not listed in its <coordinates>")
        else:
            raxes, taxes = _JOINT_AXES[kind]
            need = len(raxes) + len(taxes)
            if len(cnames) != need:
                raise doc.err(f"{where}: needs {need} <Coordinate> entries, found {len(cnames)}")
            rots = [Dof(a, c) for a, c in zip(raxes, cnames)]
            trans = [Dof(a, c) for a, c in zip(taxes, cnames[len(raxes):])]
            scaled = [False] * len(trans)  # only CustomJoint functions are scaled by OpenSim
        joint = Joint(jname, pbody, rotations=tuple(rots), translations=tuple(trans), **frames)
        scaled_slots[cbody] = list(scaled) + [True] * (3 - len(scaled))
        mb.add_body(cbody, _with_scaling(joint, scaled))
        for c in coords:
            cw = f"coordinate '{c.get('name')}' of {where}"
            default = doc.floats(c, "default_value", 1, (0.0,), cw)[0]
            rng = doc.floats(c, "range", 2, (-math.inf, math.inf), cw)
            if rng[0] > rng[1]:
                raise doc.err(f"{cw}: <range> {rng} has min > max")
            if not rng[0] <= default <= rng[1]:
                log.warning("load_osim(%s): %s: default %g outside <range> %s; range widened to include it", path, cw, default, rng)
            mb.add_coordinate(
                c.get("name"),
                default=default,
                range=(min(rng[0], default), max(rng[1], default)),
                locked=doc.flag(c, "locked"),
                clamped=doc.flag(c, "clamped"),
            )

    bodies = [b.get("name") for b in m.findall("BodySet/objects/Body")]
    lonely = [b for b in bodies if b not in child_of]
    if lonely:
        raise doc.err(f"body/bodies {lonely} are not the child of any joint; attach each with a joint")

    # constraints
    cset = m.find("ConstraintSet/objects")
    for cel in [] if cset is None else list(cset):
        cname = cel.get("name")
        where = f"{cel.tag} '{cname}'"
        enforced = doc.flag(cel, "isEnforced", True) and not doc.flag(cel, "isDisabled", False)
        if not enforced:
            continue
        if cel.tag != "CoordinateCouplerConstraint":
            raise doc.err(f"{where}: enforced constraint of this type changes kinematics and is not supported")
        ind = (doc.text(cel, "independent_coordinate_names", "") or "").split()
        dep = doc.text(cel, "dependent_coordinate_name", "") or ""
        if len(ind) != 1 or not dep:
            raise doc.err(f"{where}: needs exactly one independent and one dependent coordinate (got {ind} -> '{dep}')")
        sf = doc.floats(cel, "scale_factor", 1, (1.0,), where)[0]
        if sf != 1.0:
            raise doc.err(f"{where}: <scale_factor> {sf} != 1 is not supported")
        holder = cel.find("coupled_coordinates_function")
        fel = None if holder is None else _function_child(holder)
        if fel is None:
            raise doc.err(f"{where}: missing <coupled_coordinates_function>")
        mb.add_coupler(dep, ind[0], doc.function(fel, where))

    # markers
    mset = m.find("MarkerSet/objects")
    for mel in [] if mset is None else list(mset):
        if mel.tag != "Marker":
            continue
        name = mel.get("name")
        where = f"marker '{name}'"
        ref = doc.text(mel, "socket_parent_frame") or doc.text(mel, "body")
        if ref is None:
            raise doc.err(f"{where}: missing <socket_parent_frame>; name its body")
        mpath = doc.path_of.get(id(mel), f"/markerset/{name}")
        body, R, t, _ = doc.fold(doc.resolve(mpath, ref, where), where)
        if body == GROUND:
            raise doc.err(f"{where}: markers fixed to ground are not supported; attach it to a body")
        loc = np.array(doc.floats(mel, "location", 3, (0.0, 0.0, 0.0), where))
        mb.add_marker(name, body, tuple(R @ loc + t), fixed=doc.flag(mel, "fixed"))

    try:
        model = mb.build(dtype=dtype, device=device)
    except ModelError as e:
        raise ModelError(f"{path}: {e}") from None
    _report_ignored(doc)
    return model


def _with_scaling(joint: Joint, scaled: list[bool]) -> Joint:
    """Mark translation DOFs OpenSim's ScaleTool leaves alone (``Dof.scaled = False``)."""
    trans = tuple(
        Dof(d.axis, d.coordinate, d.function, scaled=s) for d, s in zip(joint.translations, scaled)
    )
    return Joint(
        joint.name,
        joint.parent,
        joint.parent_location,
        joint.parent_orientation,
        joint.child_location,
        joint.child_orientation,
        joint.rotations,
        trans,
    )


def _report_ignored(doc: _Doc) -> None:
    m = doc.model
    counts: Counter = Counter()
    for set_tag, label in (
        ("ForceSet", "forces/muscles"),
        ("ContactGeometrySet", "contact geometries"),
        ("ProbeSet", "probes"),
        ("ControllerSet", "controllers"),
        ("ComponentSet", "other components"),
    ):
        objs = m.find(f"{set_tag}/objects")
        if objs is not None and len(objs):
            counts[label] += len(objs)
    n_geom = sum(len(g) for g in m.iter("attached_geometry"))
    n_wrap = sum(len(w) for w in m.iter("WrapObjectSet") for w in w.iter("objects"))
    if n_geom:
        counts["geometry items"] += n_geom
    if n_wrap:
        counts["wrap objects"] += n_wrap
    if counts:
        what = ", ".join(f"{v} {k}" for k, v in counts.items())
        log.info("load_osim(%s): ignored (no effect on kinematics): %s; mass properties too", doc.path, what)


# --------------------------------------------------------------------------- save
def _slot_function(model: Model, b: int, s: int) -> Optional[F.FunctionSpec]:
    """The (unscaled) function spec of joint ``b`` slot ``s`` from the model's tensors."""
    flat = b * 6 + s
    for g, params in zip(model.topology.slot_groups, model.slot_params):
        if flat in g.outputs:
            return F.group_entry(g.key, params, g.outputs.index(flat))
    return None


def _function_xml(fn: F.FunctionSpec) -> ET.Element:
    if isinstance(fn, F.Constant):
        el = ET.Element("Constant", name="function")
        ET.SubElement(el, "value").text = repr(fn.value)
    elif isinstance(fn, F.Linear):
        el = ET.Element("LinearFunction", name="function")
        ET.SubElement(el, "coefficients").text = _fmt((fn.slope, fn.intercept))
    elif isinstance(fn, F.Polynomial):
        el = ET.Element("PolynomialFunction", name="function")
        ET.SubElement(el, "coefficients").text = _fmt(fn.coefficients)
    else:
        if fn.end is not F.SplineEnd.SIMM:
            raise ModelError(
                "save_osim: a natural-end spline has no OpenSim equivalent (OpenSim reads "
                "NaturalCubicSpline as a SimmSpline); refit it as SplineEnd.SIMM"
            )
        el = ET.Element("SimmSpline", name="function")
        ET.SubElement(el, "x").text = _fmt(fn.x)
        ET.SubElement(el, "y").text = _fmt(fn.y)
    el.tail = "\n"
    return el


def _set_text(parent: ET.Element, tag: str, text: str) -> None:
    c = parent.find(tag)
    if c is None:
        c = ET.SubElement(parent, tag)
    c.text = text


def save_osim(model: Model, path: PathLike, template: PathLike) -> None:
    """Write ``model`` (e.g. scaled or with moved markers) into a copy of the ``template`` .osim.

    The template must be the file the model was loaded from (same bodies, joints, markers).
    Written back, with the model's scales applied as OpenSim's ScaleTool would bake them:
    joint frame locations and orientations (into the joint's offset frames, created where the
    template attaches a joint directly to a body), CustomJoint translation functions (scaled
    function of the parent body's scale) and marker locations (re-attached to their body frame).
    Mass properties and geometry are left as in the template. OpenSim loads the result and gives
    the same body and marker positions as ``kinfunc.fk`` on ``model``.
    """
    template = Path(template)
    tree = ET.parse(template)
    doc = _Doc(template, tree.getroot())
    m = doc.model
    topo = model.topology
    with torch.no_grad():
        s_body, s_parent = effective_scales(model)
        s_body = s_body.detach().to("cpu", torch.float64).numpy()
        s_parent = s_parent.detach().to("cpu", torch.float64).numpy()
        pl = (model.parent_location.detach().cpu().double().numpy()) * s_parent
        cl = (model.child_location.detach().cpu().double().numpy()) * s_body
        po = model.parent_orientation.detach().cpu().double().numpy()
        co = model.child_orientation.detach().cpu().double().numpy()
        s_tr = translation_scales(model).detach().to("cpu", torch.float64).numpy()
        offsets = model.marker_offsets.detach().cpu().double().numpy() * s_body[list(topo.marker_bodies)]

    joints = {j.get("name"): j for j in _objects(m, "JointSet")}
    for b, jname in enumerate(topo.joint_names):
        jel = joints.get(jname)
        if jel is None:
            raise doc.err(f"joint '{jname}' of the model is not in the template; use the file it was loaded from")
        jpath = doc.path_of[id(jel)]
        for side, loc, ori in (("parent", pl[b], po[b]), ("child", cl[b], co[b])):
            sock = f"socket_{side}_frame"
            ref = doc.text(jel, sock)
            fpath = doc.resolve(jpath, ref, f"joint '{jname}'")
            fel = doc.by_path[fpath]
            owned = jel.find("frames")
            if fel.tag == "PhysicalOffsetFrame" and owned is not None and any(f is fel for f in owned):
                base = doc.fold(fpath, jname)[0]
                parent_ref = "/ground" if base == GROUND else f"/bodyset/{base}"
                _set_text(fel, "socket_parent", parent_ref)
            else:
                base = doc.fold(fpath, jname)[0]
                if owned is None:
                    owned = ET.SubElement(jel, "frames")
                fel = ET.SubElement(owned, "PhysicalOffsetFrame", name=f"{base}_offset_{side}_kf")
                ET.SubElement(fel, "socket_parent").text = "/ground" if base == GROUND else f"/bodyset/{base}"
                _set_text(jel, sock, fel.get("name"))
            _set_text(fel, "translation", _fmt(loc))
            _set_text(fel, "orientation", _fmt(ori))
        if jel.tag == "CustomJoint":
            st = jel.find("SpatialTransform")
            tas = {ta.get("name"): ta for ta in st if ta.tag == "TransformAxis"}
            for k in range(3):
                ta = tas[f"translation{k + 1}"]
                fn = _slot_function(model, b, 3 + k)
                if fn is None:
                    fn = F.Constant(0.0)
                factor = float(s_tr[b, k])
                if factor != 1.0:
                    fn = F.Multiplier(fn, factor)
                old = _function_child(ta)
                new = _function_xml(fn)
                if old is not None:
                    idx = list(ta).index(old)
                    ta.remove(old)
                    ta.insert(idx, new)
                else:
                    ta.append(new)
    markers = {mk.get("name"): mk for mk in _objects(m, "MarkerSet") if mk.tag == "Marker"}
    for i, name in enumerate(topo.marker_names):
        mel = markers.get(name)
        if mel is None:
            raise doc.err(f"marker '{name}' of the model is not in the template; use the file it was loaded from")
        body = topo.body_names[topo.marker_bodies[i]]
        _set_text(mel, "socket_parent_frame", f"/bodyset/{body}")
        _set_text(mel, "location", _fmt(offsets[i]))
        _set_text(mel, "fixed", "true" if topo.marker_fixed[i] else "false")
    tree.write(Path(path), encoding="UTF-8", xml_declaration=True)
