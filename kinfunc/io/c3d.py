"""C3D marker files (Vicon, Qualisys, Motion Analysis, Codamotion, ...) -> :class:`MarkerTrial`.

Reading happens in two steps:

1. a pure-Python pass (:mod:`._c3dformat`) validates the header and the whole parameter
   section (record offsets, types, sizes) and checks that the data section holds the frames
   the file declares (frame count from the header, POINT:FRAMES and, past 65535 frames,
   TRIAL:ACTUAL_START_FIELD/ACTUAL_END_FIELD, as ezc3d reads them; see
   :func:`._c3dformat.read_structure`). Anything malformed raises :class:`DataFileError`
   naming the file, the byte offset and the cause -- before native code sees the bytes;
2. the point data are decoded by ezc3d (``backend="ezc3d"``; the default when installed) or
   by the built-in numpy decoder (``backend="python"``; identical results on every sample
   file and on generated files of every layout, tests/test_c3d_differential.py). Files ezc3d
   refuses but step 1 validated (SGI/MIPS big-endian files, some non-standard parameter
   sections) are read by the built-in decoder with a warning.
   ``isolate=True`` additionally probes ezc3d in a child process first, so that even a crash
   in native code cannot take the calling process down (costs about one interpreter start,
   see docs/data.md).

Conventions: coordinates in metres (``POINT:UNITS`` ``mm``/``cm``/``m``; missing or unknown ->
warning and ``mm``, the unit nearly every system writes), missing samples NaN (negative
residual, or all three coordinates exactly zero -- CMU files store gaps that way),
time 0 at the first stored frame, as OpenSim's C3D reader does (``time_origin="frame1"``
gives ``(first_frame - 1 + i) / rate``, the acquisition's own clock used by C3D events).
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ..trial import DataFileError, MarkerTrial
from . import _c3dformat as fmt
from ._markerio import PathLike, Report, parse_units, unique_labels

__all__ = ["load_c3d", "write_c3d", "POINT_TYPE_GROUPS"]

# POINT parameters listing non-marker ("model output") points, as Vicon/BTK write them
POINT_TYPE_GROUPS = ("ANGLES", "FORCES", "MOMENTS", "POWERS", "SCALARS", "REACTIONS")
_TYPE_NAMES = {g: g.lower() for g in POINT_TYPE_GROUPS}


def _labels(info: fmt.C3DInfo, group: str, base: str, n: Optional[int]) -> list[str]:
    out: list[str] = []
    k = 1
    while True:
        key = base if k == 1 else f"{base}{k}"
        v = info.param(group, key)
        if v is None:
            break
        out.extend([v] if isinstance(v, str) else list(v) if isinstance(v, list) else [])
        k += 1
    out = [s.strip() for s in out]
    if n is not None:
        out = out[:n] + [""] * max(0, n - len(out))
    return out


def _probe_ezc3d(path: str) -> tuple[int, str]:
    code = "import sys, ezc3d; ezc3d.c3d(sys.argv[1])"
    try:
        r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return -999, "ezc3d did not finish within 60 s"
    return r.returncode, r.stderr.decode("utf-8", "replace")[-300:]


def load_c3d(
    path: PathLike,
    *,
    points: Union[str, Sequence[str]] = "markers",
    units: Optional[str] = None,
    backend: str = "auto",
    isolate: bool = False,
    strip_prefix: bool = True,
    zeros_are_gaps: bool = True,
    strict: bool = True,
    time_origin: str = "first",
) -> MarkerTrial:
    """Read the 3-D points of a C3D file into a :class:`MarkerTrial` (metres, NaN gaps).

    Args:
        path: the ``.c3d`` file.
        points: which points to keep: ``"markers"`` (default: every point not listed in
            ``POINT:ANGLES/FORCES/MOMENTS/POWERS/SCALARS/REACTIONS``), ``"all"``, or a sequence
            of kinds among ``"markers", "angles", "forces", "moments", "powers", "scalars",
            "reactions"``. Only markers are converted to metres; other kinds keep their stored
            values (degrees, N, N.mm, ...); ``meta["point_kinds"]`` says which is which.
        units: override ``POINT:UNITS`` (``"mm"``, ``"cm"``, ``"m"``).
        backend: ``"auto"`` (ezc3d when installed and able, else built-in), ``"ezc3d"``,
            ``"python"``.
        isolate: probe ezc3d in a child process before loading in this one.
        strip_prefix: ``"subject:LFWT"`` -> ``"LFWT"``; the prefix goes to
            ``meta["subject_prefixes"]`` (label -> prefix). Not done where it would make two
            labels equal (reported).
        zeros_are_gaps: samples stored as exactly ``(0, 0, 0)`` are missing.
        time_origin: ``"first"`` (default, OpenSim's convention): ``time[0] = 0`` at the
            first stored frame; ``"frame1"``: ``time = (first_frame - 1 + i) / rate``.
        strict: a data section shorter than the header's frame count is an error; with
            ``False`` the complete frames present are loaded (reported).

    Returns:
        ``MarkerTrial`` with ``xyz (T, M, 3)`` float64 (metres for markers) in the lab frame of
        the file, ``time (T,)`` s, ``rate`` Hz, ``units`` as read; ``meta``: ``first_frame``
        (1-based), ``frames_from`` (where the frame count was read: ``"header"``,
        ``"POINT:FRAMES"``, ...; see docs/data.md), ``processor`` (intel/dec/mips),
        ``backend``, ``excluded`` (kind -> labels not loaded), ``point_kinds``,
        ``subject_prefixes``, ``renamed`` (new -> label in file), ``gaps_from_zeros``,
        ``warnings``, ``parameters`` (all groups, decoded).

    Raises:
        DataFileError: malformed or unreadable file (names the file, where, and why).
    """
    if time_origin not in ("first", "frame1"):
        raise ValueError(f"time_origin must be 'first' or 'frame1', not {time_origin!r}")
    if backend not in ("auto", "ezc3d", "python"):
        raise ValueError(f"backend must be 'auto', 'ezc3d' or 'python', not {backend!r}")
    kinds_all = ("markers",) + tuple(_TYPE_NAMES.values())
    if points == "all":
        keep_kinds = set(kinds_all)
    elif points == "markers":
        keep_kinds = {"markers"}
    else:
        keep_kinds = set([points] if isinstance(points, str) else points)
        bad = keep_kinds - set(kinds_all)
        if bad:
            raise ValueError(f"points: unknown kind(s) {sorted(bad)}; choose from {kinds_all} or 'all'")
    p = Path(os.fspath(path))
    rep = Report(str(p))
    if not p.is_file():
        raise rep.error("no such file")
    buf = p.read_bytes()
    info = fmt.read_structure(buf, rep)
    present = fmt.frames_present(info)
    truncated = present < info.n_frames
    if truncated:
        msg = (
            f"data section truncated: the file says {info.n_frames} frames (from {info.frames_from}) "
            f"of {info.frame_bytes} bytes "
            f"from byte {(info.data_start - 1) * 512}, the file ({info.size} bytes) holds {present} complete frames"
        )
        if strict:
            raise rep.error(msg + "; pass strict=False to load_c3d to load those frames")
        rep.warn(msg + "; loaded those")
    P, T = info.n_points, present
    if info.n_frames == 0:
        raise rep.error(
            f"no frames: header frames {info.first_frame}..{info.last_frame} (words 4-5 of the header)"
        )
    if P == 0:
        rep.warn("the file holds no 3-D points (analog-only?); the trial has no markers")

    # --- decode point data -----------------------------------------------------------------
    # more frames than the 16-bit fields hold: ezc3d counts them otherwise (docs/data.md)
    long16 = info.frames_from.startswith(("TRIAL", "data section"))
    use = backend
    if use == "auto":
        try:
            import ezc3d  # noqa: F401

            use = "ezc3d"
        except ImportError:
            use = "python"
        if info.processor == "mips" or truncated or long16:
            use = "python"
        elif info.irregular and not isolate:
            # native code is only trusted in-process with files that follow the format exactly
            rep.warn(
                f"irregular C3D ({'; '.join(info.irregular[:3])}); read with the built-in reader "
                "(isolate=True tries ezc3d in a child process first)"
            )
            use = "python"
    elif use == "ezc3d" and (info.processor == "mips" or truncated or long16):
        if info.processor == "mips":
            why = "SGI/MIPS big-endian files"
        elif truncated:
            why = "truncated data sections"
        else:  # ezc3d 1.7 counts these frames otherwise (16-bit fields, or to the end of the file)
            why = f"the {info.n_frames} frames of this file (more than 65535; counted from {info.frames_from})"
        raise rep.error(f"ezc3d cannot read {why}; use backend='auto' or 'python' (built-in reader)")
    xyz = valid = None
    if use == "ezc3d":
        try:
            import ezc3d
        except ImportError:
            raise DataFileError(f"{p}: backend='ezc3d' needs the ezc3d package (pip install ezc3d)") from None
        if isolate or info.irregular:  # irregular files never meet native code unprobed
            rc, err = _probe_ezc3d(str(p))
            if rc not in (0, 1):
                msg = f"the native C3D reader (ezc3d) crashed on this file in a child process (exit status {rc})"
                if backend == "ezc3d":
                    raise rep.error(msg + "; the file is malformed. Try backend='python' (built-in reader)")
                rep.warn(msg + "; read with the built-in reader")
                use = "python"
    if use == "ezc3d":
        try:
            c = ezc3d.c3d(str(p))
            arr = np.asarray(c["data"]["points"])
            if T == 0xFFFF and arr.ndim == 3 and arr.shape[2] > T and not np.nan_to_num(arr[:3, :, T:]).any():
                # a count of 65535 makes ezc3d read to the end of the file, block padding included
                arr = arr[:, :, :T]
            if arr.shape[1:] != (P, T):
                raise RuntimeError(f"ezc3d returned points of shape {arr.shape}, expected (4, {P}, {T})")
            xyz = arr[:3].transpose(2, 1, 0).astype(np.float64)
            valid = ~np.isnan(xyz).any(-1)
        except Exception as e:  # ezc3d raises RuntimeError/OSError with its own text
            if backend == "ezc3d":
                raise rep.error(f"ezc3d cannot read it: {e}") from None
            rep.warn(f"ezc3d refused the file ({str(e).strip()[:120]}); read with the built-in reader")
            use = "python"
    if use == "python":
        xyz, valid = fmt.read_points(buf, info, T)
    assert xyz is not None and valid is not None
    xyz = np.where(valid[..., None], xyz, np.nan)

    # --- labels and kinds -------------------------------------------------------------------
    raw = _labels(info, "POINT", "LABELS", P)
    kinds = ["markers"] * P
    for g in POINT_TYPE_GROUPS:
        listed = set(_labels(info, "POINT", g, None)) - {""}
        if not listed:
            continue
        for k, lab in enumerate(raw):
            if kinds[k] == "markers" and (lab in listed or lab.rsplit(":", 1)[-1] in listed):
                kinds[k] = _TYPE_NAMES[g]
    excluded: dict[str, list[str]] = {}
    keep = []
    for k in range(P):
        if kinds[k] in keep_kinds:
            keep.append(k)
        else:
            excluded.setdefault(kinds[k], []).append(raw[k])
    labels = [raw[k] for k in keep]
    kinds_kept = [kinds[k] for k in keep]
    xyz = xyz[:, keep]

    prefixes: dict[str, str] = {}
    if strip_prefix:
        stripped = [lab.rsplit(":", 1)[-1] if ":" in lab else lab for lab in labels]
        counts: dict[str, int] = {}
        for s in stripped:
            counts[s] = counts.get(s, 0) + 1
        clash = []
        for k, lab in enumerate(labels):
            if ":" in lab:
                s = stripped[k]
                if counts[s] > 1:
                    clash.append(lab)
                    continue
                prefixes[s] = lab.rsplit(":", 1)[0]
                labels[k] = s
        if clash:
            rep.warn(f"subject prefixes kept on {len(clash)} label(s) where stripping would make labels equal: {clash[:6]}")
    labels, renamed = unique_labels(labels, rep, what="point")

    # --- units, gaps, rate, time ------------------------------------------------------------
    file_units = info.param("POINT", "UNITS")
    if isinstance(file_units, list):
        file_units = file_units[0] if file_units else None
    if units is not None:
        u = parse_units(units)
        if u is None:
            raise ValueError(f"units={units!r}: use 'mm', 'cm' or 'm'")
    else:
        u = parse_units(file_units)
        if u is None:
            rep.warn(
                f"POINT:UNITS is {file_units!r} (missing or not a length unit); assuming 'mm' "
                "(pass units= to load_c3d to say otherwise)"
            )
            u = ("mm", 1e-3)
    is_marker = np.array([k == "markers" for k in kinds_kept], dtype=bool)
    n_zero = 0
    if zeros_are_gaps and xyz.size:
        zero = (xyz == 0.0).all(-1) & is_marker[None, :]
        n_zero = int(zero.sum())
        xyz[zero] = np.nan
    xyz[:, is_marker] *= u[1]
    rate = info.rate
    prate = info.param("POINT", "RATE")
    prate = float(prate.reshape(-1)[0]) if isinstance(prate, np.ndarray) and prate.size else None
    if prate is not None and np.isfinite(prate) and prate > 0:  # POINT:RATE first, as ezc3d
        if rate > 0 and abs(prate - rate) > 1e-3 * rate:
            rep.warn(f"header frame rate {rate:g} Hz differs from POINT:RATE {prate:g} Hz; using POINT:RATE")
        rate = prate
    if not (rate > 0):
        raise rep.error(f"frame rate in the header is {rate} and POINT:RATE is {prate}; cannot time the frames")
    first = int(info.first_frame) if info.first_frame >= 1 else 1
    t0 = (first - 1) if time_origin == "frame1" else 0
    time = (t0 + np.arange(T, dtype=np.float64)) / rate
    meta = {
        "format": "c3d",
        "processor": info.processor,
        "backend": use,
        "first_frame": first,
        "frames_from": info.frames_from,
        "excluded": excluded,
        "point_kinds": dict(zip(labels, kinds_kept)),
        "subject_prefixes": prefixes,
        "renamed": renamed,
        "gaps_from_zeros": n_zero,
        "warnings": list(rep.messages),
        "parameters": info.params,
    }
    return MarkerTrial(
        names=tuple(labels),
        xyz=torch.from_numpy(np.ascontiguousarray(xyz)),
        rate=float(rate),
        time=torch.from_numpy(time),
        units=u[0],
        source=str(p),
        meta=meta,
    )


def write_c3d(path: PathLike, trial: MarkerTrial, *, units: Optional[str] = None) -> Path:
    """Write ``trial`` as a C3D file (Intel, float) with ezc3d; missing samples get a negative
    residual. ``units``: stored length unit (default ``trial.units``). Returns the path."""
    try:
        import ezc3d
    except ImportError:
        raise ImportError("write_c3d needs ezc3d (pip install ezc3d, or kinfunc[io])") from None
    p = Path(os.fspath(path))
    if p.suffix.lower() != ".c3d":
        raise ValueError(f"write_c3d: {p} must end in .c3d (ezc3d appends it otherwise)")
    u = parse_units(units or trial.units or "m")
    if u is None:
        raise ValueError(f"write_c3d: unknown units {units or trial.units!r}")
    xyz = trial.xyz.detach().to(torch.float64).cpu().numpy() / u[1]
    T, M, _ = xyz.shape
    c = ezc3d.c3d()
    c["parameters"]["POINT"]["RATE"]["value"] = np.array([float(trial.rate)])
    c["parameters"]["POINT"]["LABELS"]["value"] = list(trial.names)
    c["parameters"]["POINT"]["DESCRIPTIONS"]["value"] = [""] * M
    c.add_parameter("POINT", "UNITS", [u[0]])
    pts = np.ones((4, M, T))
    pts[:3] = xyz.transpose(2, 1, 0)
    c["data"]["points"] = pts
    miss = np.isnan(xyz).any(-1).T  # (M, T)
    res = np.zeros((1, M, T))
    res[0][miss] = -1.0
    pts[:3][:, miss] = 0.0
    c["data"]["meta_points"] = {"residuals": res, "camera_masks": np.zeros((7, M, T), dtype=bool)}
    first = int(trial.meta.get("first_frame", 1) or 1) if trial.meta else 1
    c["header"]["points"]["first_frame"] = max(0, first - 1)
    c.write(str(p))
    return p
