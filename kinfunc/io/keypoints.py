"""3-D keypoints of pose estimators (triangulated or lifted), as :class:`MarkerTrial` with
per-sample confidences.

Two layouts, both in the estimators' own keypoint names (``kf.models.full_body(marker_set=...)``
has them for ``coco17``, ``halpe26``, ``body25``, ``h36m17``, ``smpl24``, ``opencap``):

* **NumPy** ``.npy``: an array ``(T, K, 3)`` (positions) or ``(T, K, 4)`` (positions and a
  confidence in ``[0, 1]``); ``.npz``: arrays ``keypoints`` (as ``.npy``) and optionally
  ``confidence (T, K)``, ``names (K,)``, ``rate`` (Hz), ``units``. Names not in the file come from
  ``keypoint_set=`` (the estimator's order) or ``names=``.
* **JSON**: ``{"keypoint_set": "coco17", "names": [...], "rate": 30, "units": "m",
  "frames": [[[x, y, z, c], ...K...], ...T...]}``; ``names`` or ``keypoint_set`` (one of them),
  ``c`` optional per point, ``null`` (or NaN) coordinates for a missing point.

Missing points are NaN (confidence 0); NaN confidences count as 0. Units ``m``, ``cm`` or ``mm``
(default ``m``). Axes are as the file has them: use :meth:`MarkerTrial.reoriented` (or
``suggest_orientation``) for a camera frame with Y down.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from ..trial import DataFileError, MarkerTrial

__all__ = ["load_keypoints"]

_UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}


def _names(path: Path, k: int, names: Optional[Sequence[str]], keypoint_set: Optional[str]) -> tuple[str, ...]:
    if names is None and keypoint_set is not None:
        from ..nn import keypoint_names

        try:
            names = keypoint_names(keypoint_set)
        except ValueError as e:
            raise DataFileError(f"{path}: unknown keypoint_set {keypoint_set!r} ({e})") from None
    if names is None:
        raise DataFileError(f"{path}: the file names no keypoints; pass keypoint_set='coco17' (or another set) or names=[...]")
    names = tuple(str(n) for n in names)
    if len(names) != k:
        raise DataFileError(f"{path}: {k} keypoints per frame but {len(names)} names; give names matching the file's order")
    if len(set(names)) != len(names):
        raise DataFileError(f"{path}: repeated keypoint names {sorted({n for n in names if names.count(n) > 1})}")
    return names


def load_keypoints(
    path: Union[str, Path],
    *,
    keypoint_set: Optional[str] = None,
    names: Optional[Sequence[str]] = None,
    rate: Optional[float] = None,
    units: Optional[str] = None,
) -> MarkerTrial:
    """Read a keypoint file (module docstring) into a :class:`MarkerTrial`: ``xyz (T, K, 3)``
    metres (NaN where missing), ``confidence (T, K)``. ``rate`` (Hz) and ``units`` override or
    fill in what the file says (a rate is required: from the file or here)."""
    path = Path(path)
    ext = path.suffix.lower()
    meta: dict[str, Any] = {}
    conf = None
    try:
        if ext == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "keypoints" not in z:
                    raise DataFileError(f"{path}: no array 'keypoints' (has {', '.join(z.files)})")
                arr = z["keypoints"]
                conf = z["confidence"] if "confidence" in z else None
                names = names if names is not None else (list(z["names"]) if "names" in z else None)
                rate = rate if rate is not None else (float(z["rate"]) if "rate" in z else None)
                units = units if units is not None else (str(z["units"]) if "units" in z else None)
        elif ext == ".json":
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict) or "frames" not in doc:
                raise DataFileError(f"{path}: expected an object with 'frames' (see kinfunc.io.keypoints)")
            rows = [[[math.nan if v is None else v for v in p] for p in f] for f in doc["frames"]]
            widths = {len(p) for f in rows for p in f}
            if not rows or len({len(f) for f in rows}) != 1 or not widths <= {3, 4}:
                raise DataFileError(f"{path}: 'frames' must be T lists of K points of 3 or 4 numbers")
            if widths == {3, 4}:
                rows = [[p if len(p) == 4 else [*p, 1.0] for p in f] for f in rows]
            arr = np.asarray(rows, dtype=np.float64)
            names = names if names is not None else doc.get("names")
            keypoint_set = keypoint_set or doc.get("keypoint_set")
            rate = rate if rate is not None else doc.get("rate")
            units = units if units is not None else doc.get("units")
        else:
            raise DataFileError(f"{path}: unknown keypoint file type {ext!r}; expected .npy, .npz or .json")
    except (OSError, ValueError, TypeError) as e:
        if isinstance(e, DataFileError):
            raise
        raise DataFileError(f"{path}: cannot read keypoints ({e})") from None
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise DataFileError(f"{path}: keypoints of shape {arr.shape}; expected (T, K, 3) or (T, K, 4)")
    if arr.shape[-1] == 4:
        conf = arr[..., 3] if conf is None else conf
        arr = arr[..., :3]
    T, K = arr.shape[:2]
    kn = _names(path, K, names, keypoint_set)
    if rate is None or not float(rate) > 0:
        raise DataFileError(f"{path}: no sampling rate; pass rate=... (Hz)")
    units = units or "m"
    if units not in _UNITS:
        raise DataFileError(f"{path}: units {units!r}; use m, cm or mm")
    xyz = arr * _UNITS[units]
    missing = ~np.isfinite(xyz).all(-1)
    if conf is not None:
        conf = np.asarray(conf, dtype=np.float64)
        if conf.shape != (T, K):
            raise DataFileError(f"{path}: confidence of shape {conf.shape}; expected ({T}, {K})")
        conf = np.nan_to_num(conf, nan=0.0)
        if (conf < 0).any() or (conf > 1).any():
            raise DataFileError(f"{path}: confidences outside [0, 1] (min {conf.min():.3g}, max {conf.max():.3g}); "
                                "rescale the scores to [0, 1]")
        conf = np.where(missing, 0.0, conf)
        xyz = np.where((conf <= 0)[..., None], np.nan, xyz)
    meta["keypoint_set"] = keypoint_set
    return MarkerTrial(
        names=kn,
        xyz=torch.from_numpy(np.ascontiguousarray(xyz)),
        rate=float(rate),
        time=torch.arange(T, dtype=torch.float64) / float(rate),
        units=units,
        source=str(path),
        meta=meta,
        confidence=None if conf is None else torch.from_numpy(np.ascontiguousarray(conf)),
    )
