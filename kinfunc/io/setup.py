"""OpenSim IK setup files (``Setup_IK.xml``): :func:`load_ik_setup` -> :class:`kinfunc.ik.IKSetup`."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional, Union

from ..ik.setup import CoordinateTask, IKSetup
from ._xml import parse_xml

__all__ = ["SetupError", "load_ik_setup"]

PathLike = Union[str, Path]
_UNSET = {"", "unassigned"}


def _coordinate_table(path, file: str):
    """The setup's coordinate file, read for its ``from_file`` coordinate tasks (``None`` when
    it does not exist: a solve that uses those tasks then says so)."""
    from .mot import read_coordinate_table

    if not Path(file).exists():
        return None
    try:
        return read_coordinate_table(file)
    except OSError as e:
        raise SetupError(
            f"{path}: <coordinate_file> {file} cannot be read ({e.strerror or e}); the from_file coordinate "
            "tasks take their targets from it: fix the path (relative to the setup file) or the task's value_type"
        ) from None


class SetupError(ValueError):
    """An IK setup file is malformed or unsupported; the message names the file and element."""


def _text(el: ET.Element, tag: str) -> Optional[str]:
    c = el.find(tag)
    return None if c is None or c.text is None else c.text.strip()


def _float(
    path: Path, el: ET.Element, tag: str, where: str, default: Optional[float] = None, allow_inf: bool = False
) -> Optional[float]:
    s = _text(el, tag)
    if s is None or s == "":
        return default
    try:
        v = float(s)
    except ValueError:
        raise SetupError(f"{path}: {where}: <{tag}> '{s}' is not a number") from None
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise SetupError(f"{path}: {where}: <{tag}> is not finite")
    return v


def _flag(el: ET.Element, tag: str, default: bool = True) -> bool:
    s = _text(el, tag)
    return default if s is None or s == "" else s.lower() in ("true", "1", "yes")


def _file(base: Path, el: ET.Element, tag: str) -> Optional[str]:
    s = _text(el, tag)
    if s is None or s.lower() in _UNSET:
        return None
    p = Path(s)
    return str(p if p.is_absolute() else (base / p))


def _task_set(path: Path, tool: ET.Element) -> list[ET.Element]:
    ts = tool.find("IKTaskSet")
    if ts is None:
        return []
    ref = ts.get("file")
    if ref:  # the task set lives in its own file, relative to the setup file
        sub = Path(ref) if Path(ref).is_absolute() else path.parent / ref
        try:
            root = ET.parse(sub).getroot()
        except (FileNotFoundError, ET.ParseError) as e:
            raise SetupError(f"{path}: <IKTaskSet file='{ref}'> cannot be read ({e})") from None
        ts = root if root.tag == "IKTaskSet" else root.find(".//IKTaskSet")
        if ts is None:
            raise SetupError(f"{path}: {sub} holds no <IKTaskSet>")
    objs = ts.find("objects")
    return [] if objs is None else list(objs)


def load_ik_setup(path: PathLike) -> IKSetup:
    """Read an OpenSim ``InverseKinematicsTool`` setup file.

    Returns an :class:`~kinfunc.ik.IKSetup`: marker weights of the ``apply=true`` marker tasks
    (other markers are not used, as in OpenSim), coordinate tasks of the ``apply=true``
    coordinate tasks (``value_type``: ``default_value`` -> ``value=None`` = the model's default;
    ``manual_value`` -> ``value`` as written, in OpenSim's internal units rad / m;
    ``from_file`` -> ``from_file=True``, targets from ``coordinate_file``), ``time_range``
    ``(t0, t1)`` seconds, and file names resolved relative to the setup file's folder.
    Raises :class:`SetupError` (a ``ValueError``) naming the file and element.
    """
    path = Path(path)
    root = parse_xml(path, SetupError)
    tool = root if root.tag == "InverseKinematicsTool" else root.find("InverseKinematicsTool")
    if tool is None:
        raise SetupError(f"{path}: no <InverseKinematicsTool> element; is this an OpenSim IK setup file?")
    base = path.parent
    weights: dict[str, float] = {}
    tasks: dict[str, CoordinateTask] = {}
    for el in _task_set(path, tool):
        name = el.get("name")
        where = f"<{el.tag} name='{name}'>"
        if el.tag not in ("IKMarkerTask", "IKCoordinateTask"):
            raise SetupError(f"{path}: {where}: unknown task type; expected IKMarkerTask or IKCoordinateTask")
        if not name:
            raise SetupError(f"{path}: a <{el.tag}> has no name; name the marker or coordinate")
        if not _flag(el, "apply"):
            continue
        weight = _float(path, el, "weight", where, 1.0)
        if weight < 0:
            raise SetupError(f"{path}: {where}: negative <weight> {weight}")
        if el.tag == "IKMarkerTask":
            if name in weights:
                raise SetupError(f"{path}: {where}: marker task given twice")
            weights[name] = weight
            continue
        if name in tasks:
            raise SetupError(f"{path}: {where}: coordinate task given twice")
        vtype = (_text(el, "value_type") or "default_value").lower()
        if vtype == "default_value":
            tasks[name] = CoordinateTask(weight, None)
        elif vtype == "manual_value":
            tasks[name] = CoordinateTask(weight, _float(path, el, "value", where, 0.0))
        elif vtype == "from_file":
            tasks[name] = CoordinateTask(weight, None, from_file=True)
        else:
            raise SetupError(
                f"{path}: {where}: <value_type> '{vtype}' unknown; use default_value, manual_value or from_file"
            )
    tr = _text(tool, "time_range")
    time_range = None
    if tr:
        try:
            t = [float(v) for v in tr.split()]
        except ValueError:
            raise SetupError(f"{path}: <time_range> '{tr}' is not two numbers") from None
        if len(t) != 2 or not t[0] <= t[1]:
            raise SetupError(f"{path}: <time_range> '{tr}' must be 'start end' with start <= end")
        time_range = (t[0], t[1])
    coordinate_file = _file(base, tool, "coordinate_file")
    if any(t.from_file for t in tasks.values()) and coordinate_file is None:
        bad = [n for n, t in tasks.items() if t.from_file]
        raise SetupError(f"{path}: coordinate task(s) {bad} use value_type from_file but <coordinate_file> is unset")
    return IKSetup(
        marker_weights=weights,
        coordinate_tasks=tasks,
        time_range=time_range,
        model_file=_file(base, tool, "model_file"),
        marker_file=_file(base, tool, "marker_file"),
        output_motion_file=_file(base, tool, "output_motion_file"),
        coordinate_file=coordinate_file,
        coordinate_table=_coordinate_table(path, coordinate_file) if any(t.from_file for t in tasks.values()) else None,
        accuracy=_float(path, tool, "accuracy", "<InverseKinematicsTool>"),
        constraint_weight=_float(path, tool, "constraint_weight", "<InverseKinematicsTool>", allow_inf=True),
    )
