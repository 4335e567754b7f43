"""OpenSim motion (``.mot``) and storage (``.sto``) tables: read and write.

Both are text tables: a header of ``key=value`` lines (and free text) closed by ``endheader``,
then a tab-separated column-label row starting with ``time`` and one row per frame. A ``.mot``
of joint coordinates states ``inDegrees=yes|no``; rotational coordinates are then in degrees,
translational ones always in metres. Inside kinfunc everything is SI (radians, metres).
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from ..model import Model, Motion

__all__ = ["MotionData", "MotionFileError", "read_coordinate_table", "read_mot", "read_sto", "write_mot", "write_sto"]

PathLike = Union[str, Path]
_TRANSLATION_NAME = re.compile(r"(^|_)t[xyz]$")


class MotionFileError(ValueError):
    """A .mot/.sto file is malformed; the message names the file, the line and the fix."""


@dataclasses.dataclass(frozen=True)
class MotionData:
    """A table of values over time, as read from a .mot/.sto file (SI units after reading).

    * ``names``: column labels ``(N,)`` (without ``time``).
    * ``time``: ``(T,)`` seconds, float64.
    * ``values``: ``(T, N)`` float64; for a .mot read with :func:`read_mot`, rotational columns in
      radians and translational ones in metres.
    * ``in_degrees``: what the file said (``None`` if it said nothing).
    * ``converted``: ``(N,)`` which columns were converted from degrees to radians.
    * ``header``: the header's ``key=value`` pairs; ``source``: the file.
    """

    names: tuple[str, ...]
    time: Tensor
    values: Tensor
    in_degrees: Optional[bool] = None
    converted: tuple[bool, ...] = ()
    header: Mapping[str, str] = dataclasses.field(default_factory=dict)
    source: Optional[str] = None

    @property
    def n_frames(self) -> int:
        return int(self.time.shape[0])

    def column(self, name: str) -> Tensor:
        """Values of column ``name`` ``(T,)``; ``KeyError`` lists the known columns."""
        try:
            return self.values[:, self.names.index(name)]
        except ValueError:
            raise KeyError(f"{self.source or 'table'}: no column '{name}'; columns: {', '.join(self.names)}") from None

    def q_for(self, model: Model) -> Tensor:
        """Coordinates ``(T, C)`` in ``model.coordinate_names`` order, model dtype and device.

        Raises ``KeyError`` naming every model coordinate the file lacks.
        """
        missing = [n for n in model.coordinate_names if n not in self.names]
        if missing:
            raise KeyError(f"{self.source or 'table'}: no column for coordinate(s) {missing}; columns: {', '.join(self.names)}")
        idx = [self.names.index(n) for n in model.coordinate_names]
        return self.values[:, idx].to(dtype=model.dtype, device=model.device)


# --------------------------------------------------------------------------------- reading
def _parse(path: Path) -> tuple[list[str], dict[str, str], list[str], np.ndarray, np.ndarray]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MotionFileError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise MotionFileError(f"{path}: not a text file; expected an OpenSim .mot/.sto table") from None
    lines = text.splitlines()
    end = next((i for i, ln in enumerate(lines) if ln.strip().lower() == "endheader"), None)
    if end is None:
        raise MotionFileError(f"{path}: no 'endheader' line; an OpenSim .mot/.sto header must end with it")
    header_lines = lines[:end]
    header: dict[str, str] = {}
    for ln in header_lines:
        if "=" in ln:
            k, v = ln.split("=", 1)
            header[k.strip()] = v.strip()
    i = end + 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines):
        raise MotionFileError(f"{path}: no column labels after 'endheader'")
    labels = lines[i].split("\t") if "\t" in lines[i] else lines[i].split()
    labels = [lab.strip() for lab in labels]
    while labels and labels[-1] == "":
        labels.pop()
    if not labels or labels[0].lower() != "time":
        raise MotionFileError(f"{path}: line {i + 1}: first column label is '{labels[0] if labels else ''}', expected 'time'")
    rows = []
    for j in range(i + 1, len(lines)):
        ln = lines[j].strip()
        if not ln:
            continue
        parts = ln.split()
        if len(parts) != len(labels):
            raise MotionFileError(
                f"{path}: line {j + 1} has {len(parts)} values but there are {len(labels)} column labels; "
                "fix the row or the labels"
            )
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            raise MotionFileError(f"{path}: line {j + 1}: non-numeric value in '{ln[:60]}'") from None
    data = np.array(rows, dtype=np.float64).reshape(len(rows), len(labels))
    return header_lines, header, labels[1:], data[:, 0], data[:, 1:]


def read_sto(path: PathLike) -> MotionData:
    """Read a .sto/.mot table as stored (no unit conversion). ``values (T, N)``, ``time (T,)``."""
    path = Path(path)
    _, header, names, time, values = _parse(path)
    flag = header.get("inDegrees")
    in_deg = None if flag is None else flag.lower() == "yes"
    return MotionData(
        tuple(names),
        torch.from_numpy(time),
        torch.from_numpy(values),
        in_deg,
        (False,) * len(names),
        header,
        str(path),
    )


def _rotational_columns(names: Sequence[str], model: Optional[Model]) -> list[bool]:
    if model is None:
        return [not _TRANSLATION_NAME.search(n) for n in names]
    return [model.topology.motion_of(n) is Motion.ROTATIONAL for n in names]


def _file_in_degrees(header_lines: Sequence[str], header: Mapping[str, str]) -> bool:
    """Whether a .mot's rotational columns are in degrees: its ``inDegrees`` flag, else (old
    SIMM files without the flag) degrees when the header names SIMM."""
    flag = header.get("inDegrees")
    if flag is not None:
        return flag.lower() == "yes"
    return any("SIMM" in ln for ln in header_lines)


def read_coordinate_table(path: PathLike) -> "CoordinateTable":
    """A .mot/.sto as the targets of ``from_file`` coordinate tasks
    (:class:`kinfunc.ik.CoordinateTable`): values as in the file, with whether its rotational
    columns are in degrees (the IK converts them by the model's coordinate types)."""
    from ..ik.setup import CoordinateTable

    path = Path(path)
    header_lines, header, names, time, values = _parse(path)
    return CoordinateTable(tuple(names), torch.from_numpy(time), torch.from_numpy(values),
                           _file_in_degrees(header_lines, header), str(path))


def read_mot(path: PathLike, model: Optional[Model] = None, in_degrees: Optional[bool] = None) -> MotionData:
    """Read an OpenSim .mot of coordinates into SI units.

    ``values (T, N)`` in radians for rotational coordinates and metres for translational ones;
    ``time (T,)`` seconds. Degrees are converted when the header says ``inDegrees=yes`` (or
    ``in_degrees=True`` is passed; an old SIMM header without the flag means degrees). Which
    columns are rotational comes from ``model`` (its coordinate motion types; columns that are
    not its coordinates are left as read) or, without a model, from OpenSim's naming (``*_tx``,
    ``*_ty``, ``*_tz`` are translations). ``MotionData.converted`` records what was converted.
    """
    path = Path(path)
    header_lines, header, names, time, values = _parse(path)
    flag = header.get("inDegrees")
    if in_degrees is None:
        in_degrees = _file_in_degrees(header_lines, header)
    rot = _rotational_columns(names, model) if in_degrees else [False] * len(names)
    if any(rot):
        values = values.copy()
        values[:, rot] *= math.pi / 180.0
    return MotionData(
        tuple(names),
        torch.from_numpy(time),
        torch.from_numpy(values),
        None if flag is None else flag.lower() == "yes",
        tuple(rot),
        header,
        str(path),
    )


# --------------------------------------------------------------------------------- writing
def _table(path: Path, title: str, names: Sequence[str], time: np.ndarray, values: np.ndarray, in_degrees: bool, extra: Sequence[str]) -> None:
    T, N = values.shape
    bad = [n for n in names if not n or any(c in n for c in "\t\n\r")]
    if bad:
        raise ValueError(f"{path}: column names {bad!r} are empty or contain tabs/newlines; rename them")
    with open(path, "w", newline="\n") as f:
        f.write(f"{title}\nversion=1\nnRows={T}\nnColumns={N + 1}\ninDegrees={'yes' if in_degrees else 'no'}\n")
        for ln in extra:
            f.write(ln + "\n")
        f.write("endheader\n")
        f.write("time\t" + "\t".join(names) + "\n")
        data = np.concatenate((time[:, None], values), 1)
        for row in data:
            f.write("\t".join(f"{v:16.8f}" if math.isfinite(v) else f"{'NaN':>16}" for v in row) + "\n")


def _np(x: Any, what: str) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def write_sto(
    path: PathLike,
    names: Sequence[str],
    time: Any,
    values: Any,
    *,
    title: str = "table",
    in_degrees: bool = False,
    comments: Sequence[str] = (),
) -> None:
    """Write a generic OpenSim storage table (``.sto``) that ``opensim.Storage`` and
    ``opensim.TimeSeriesTable`` read.

    ``names (N,)`` column labels; ``time (T,)`` seconds; ``values (T, N)`` written as given
    (``in_degrees`` only sets the header flag). ``comments`` are extra header lines.
    """
    path = Path(path)
    t = _np(time, "time").reshape(-1)
    v = _np(values, "values")
    if v.ndim == 1:
        v = v[:, None]
    if v.shape != (t.shape[0], len(names)):
        raise ValueError(f"{path}: values shape {v.shape} does not match (T={t.shape[0]}, N={len(names)}) from time and names")
    _table(path, title, list(names), t, v, in_degrees, [c for c in comments if "endheader" not in c])


def write_mot(
    path: PathLike,
    result: Any = None,
    model: Optional[Model] = None,
    *,
    q: Any = None,
    time: Any = None,
) -> None:
    """Write joint coordinates as an OpenSim 4 motion file (``inDegrees=yes``).

    ``result``: anything with ``.q (T, C)`` (rad / m, model coordinate order), ``.time (T,)``
    and ``.model`` (e.g. :class:`kinfunc.ik.IKResult`); or pass ``q=``, ``time=`` and ``model=``.
    Columns are ``model.coordinate_names`` followed by coupled (dependent) coordinates computed
    from ``q``; rotational coordinates are written in degrees, translational ones in metres.
    """
    path = Path(path)
    if result is not None:
        q = result.q if q is None else q
        time = result.time if time is None else time
        model = getattr(result, "model", None) if model is None else model
    if q is None or time is None or model is None:
        raise ValueError(f"write_mot({path}): give a result with .q/.time/.model, or q=, time= and model=")
    from ..fk import full_coordinates

    qt = q if isinstance(q, Tensor) else torch.as_tensor(np.asarray(q, dtype=np.float64))
    qt = qt.detach().to("cpu", torch.float64)
    if qt.ndim == 1:
        qt = qt[None]
    C = len(model.coordinate_names)
    if qt.shape[-1] != C:
        raise ValueError(f"write_mot({path}): q has {qt.shape[-1]} columns but the model has {C} coordinates")
    m64 = model.to(device="cpu", dtype=torch.float64)
    full = full_coordinates(m64, qt).numpy()
    topo = model.topology
    names = list(topo.coordinate_names) + list(topo.dependent_names)
    motion = [topo.motion_of(n) for n in names]
    full = full.copy()
    for k, mo in enumerate(motion):
        if mo is Motion.ROTATIONAL:
            full[:, k] *= 180.0 / math.pi
    t = _np(time, "time").reshape(-1)
    if t.shape[0] != full.shape[0]:
        raise ValueError(f"write_mot({path}): {t.shape[0]} times but {full.shape[0]} frames of q")
    _table(
        path,
        "Coordinates",
        names,
        t,
        full,
        True,
        [
            "",
            "Units are S.I. units (second, meters, Newtons, ...)",
            "If the header above contains a line with 'inDegrees', this indicates whether rotational "
            "values are in degrees (yes) or radians (no).",
            "",
        ],
    )
