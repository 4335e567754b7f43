"""Save and load a :class:`kinfunc.Model` as JSON (topology + tensor leaves).

The file holds everything a model is: the static :class:`~kinfunc.Topology` (names, parents,
coordinate defaults/ranges/flags, DOF wiring, function groups, markers) and every tensor leaf
as nested lists of float64 numbers (Python's shortest round-trip representation, so values
come back bit-exact). Infinite coordinate bounds are written as the strings ``"inf"`` /
``"-inf"``. This is the format for models that have no ``.osim`` template, e.g. a fitted
built-in model.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Union

import torch

from .. import functions as F
from ..model import FnGroup, Model, ModelError, Motion, Topology

__all__ = ["ModelFileError", "load_model", "save_model"]

PathLike = Union[str, Path]
FORMAT = "kinfunc-model"
VERSION = 1
_ENUMS = {"FnKind": F.FnKind, "SplineEnd": F.SplineEnd, "Motion": Motion}
_LEAVES = ("parent_location", "parent_orientation", "child_location", "child_orientation", "axes",
           "marker_offsets", "body_scales", "global_scale")


class ModelFileError(ModelError):
    """A JSON model file cannot be read; the message names the file, the item and the fix."""


def _enc(v: Any) -> Any:
    if isinstance(v, enum_types()):
        return {"enum": type(v).__name__, "value": v.value}
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (tuple, list)):
        return [_enc(x) for x in v]
    return v


def enum_types() -> tuple:
    return tuple(_ENUMS.values())


def _dec_float(v: Any) -> float:
    if isinstance(v, str):
        return float(v)  # "inf", "-inf", "nan"
    return float(v)


def _dec_key(v: Any) -> Any:
    if isinstance(v, dict):
        return _ENUMS[v["enum"]](v["value"])
    if isinstance(v, list):
        return tuple(_dec_key(x) for x in v)
    return v


def save_model(model: Model, path: PathLike) -> Path:
    """Write ``model`` (any dtype/device) to ``path`` as JSON; returns the path.

    Tensor leaves are stored as float64 lists; :func:`load_model` restores an equal model.
    """
    path = Path(path)
    m = model.to(device="cpu", dtype=torch.float64)
    topo = m.topology
    t: dict[str, Any] = {}
    for f in dataclasses.fields(Topology):
        v = getattr(topo, f.name)
        if f.name in ("coupler_groups", "slot_groups"):
            t[f.name] = [{"key": _enc(g.key), "outputs": list(g.outputs), "inputs": list(g.inputs)} for g in v]
        else:
            t[f.name] = _enc(v)
    leaves = {name: getattr(m, name).tolist() for name in _LEAVES}
    leaves["slot_params"] = [[p.tolist() for p in grp] for grp in m.slot_params]
    leaves["coupler_params"] = [[p.tolist() for p in grp] for grp in m.coupler_params]
    doc = {"format": FORMAT, "version": VERSION, "topology": t, "leaves": leaves}
    path.write_text(json.dumps(doc, indent=1))
    return path


def load_model(path: PathLike, dtype: torch.dtype = torch.float64, device: Any = None) -> Model:
    """Read a model written by :func:`save_model`; returns a :class:`kinfunc.Model` in ``dtype``
    on ``device``. Raises :class:`ModelFileError` (a ``ValueError``) naming the file and item."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: not a JSON model file ({e}); write one with kinfunc.io.save_model") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a kinfunc model file (no \"format\": \"{FORMAT}\"); "
                             "write one with kinfunc.io.save_model")
    if doc.get("version") != VERSION:
        raise ModelFileError(f"{path}: model file version {doc.get('version')!r}, this kinfunc reads version {VERSION}")
    item = "topology"
    try:
        t = doc["topology"]
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(Topology):
            item = f"topology.{f.name}"
            if f.name not in t:
                if f.default is not dataclasses.MISSING:
                    continue
                raise KeyError(f.name)
            v = t[f.name]
            if f.name in ("coupler_groups", "slot_groups"):
                kw[f.name] = tuple(FnGroup(_dec_key(g["key"]), tuple(int(o) for o in g["outputs"]),
                                           tuple(int(i) for i in g["inputs"])) for g in v)
            elif f.name == "coordinate_ranges":
                kw[f.name] = tuple((_dec_float(lo), _dec_float(hi)) for lo, hi in v)
            elif f.name == "coordinate_defaults":
                kw[f.name] = tuple(_dec_float(x) for x in v)
            elif f.name == "coordinate_motion":
                kw[f.name] = tuple(_dec_key(x) for x in v)
            elif f.name == "name":
                kw[f.name] = str(v)
            elif f.name in ("parents", "marker_bodies", "unscaled_slots"):
                kw[f.name] = tuple(int(x) for x in v)
            elif f.name in ("coordinate_locked", "coordinate_clamped", "marker_fixed"):
                kw[f.name] = tuple(bool(x) for x in v)
            else:
                kw[f.name] = tuple(str(x) for x in v)
        topo = Topology(**kw)
        L = doc["leaves"]
        f64 = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
        leaves = {}
        for name in _LEAVES:
            item = f"leaves.{name}"
            leaves[name] = f64(L[name])
        item = "leaves.slot_params"
        leaves["slot_params"] = tuple(tuple(f64(p) for p in grp) for grp in L["slot_params"])
        item = "leaves.coupler_params"
        leaves["coupler_params"] = tuple(tuple(f64(p) for p in grp) for grp in L["coupler_params"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: bad or missing {item} ({type(e).__name__}: {e}); "
                             "the file was not written by kinfunc.io.save_model or was edited by hand") from None
    B, M = topo.n_bodies, topo.n_markers
    shapes = {"parent_location": (B, 3), "parent_orientation": (B, 3), "child_location": (B, 3),
              "child_orientation": (B, 3), "axes": (B, 6, 3), "marker_offsets": (M, 3), "body_scales": (B, 3),
              "global_scale": ()}
    for name, shp in shapes.items():
        if M == 0 and name == "marker_offsets" and leaves[name].numel() == 0:
            leaves[name] = leaves[name].reshape(0, 3)
        if tuple(leaves[name].shape) != shp:
            raise ModelFileError(f"{path}: leaves.{name} has shape {tuple(leaves[name].shape)}, expected {shp} "
                                 f"for {B} bodies and {M} markers")
    if len(topo.parents) != B or len(topo.marker_bodies) != M:
        raise ModelFileError(f"{path}: topology lists are inconsistent (parents/body_names or markers)")
    return Model(topology=topo, **leaves).to(device=device, dtype=dtype)
