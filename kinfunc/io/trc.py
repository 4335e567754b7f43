"""TRC marker files (Motion Analysis "track row column", the format OpenSim reads).

Layout (tab separated)::

    PathFileType  4  (X/Y/Z)  <name>
    DataRate  CameraRate  NumFrames  NumMarkers  Units  OrigDataRate  OrigDataStartFrame  OrigNumFrames
    <values of the line above>
    Frame#  Time  <label 1>  ''  ''  <label 2>  ...
    ''  ''  X1  Y1  Z1  X2  ...
    <blank line, optional>
    1  0.000  x  y  z  x  y  z ...

What the reader accepts and how (each repair is reported as a :class:`DataFileWarning` and
kept in ``trial.meta["warnings"]``; nothing is dropped silently):

* line endings LF, CRLF or CR; UTF-8 or Latin-1 labels;
* missing samples as blank fields, ``NaN`` in any case, padded with spaces, ``-nan(ind)``,
  ``1.#QNAN``; a marker with some but not all of X/Y/Z blank is missing in that frame;
* rows shorter than the header (trailing missing markers omitted): padded with NaN;
* E-notation numbers; whitespace-separated files (no tabs) as long as no field is blank;
* labels separated by any number of tabs; ``NumMarkers`` disagreeing with the labels
  (the labels win, reported);
* data columns beyond the labelled markers: ``unlabeled="keep"`` (default; named
  ``unlabeled_<k>`` with ``k`` the 1-based marker column), ``"drop"`` or ``"error"``;
* duplicate or empty labels: made unique (``LASI_2``), reported, original in ``meta["renamed"]``;
* blank lines between/after rows are skipped.

Errors (:class:`DataFileError`, naming file, line and the fix): empty file, header ended early,
unknown units (override with ``units=``), a non-number in a data field, fewer rows than
``NumFrames`` (``strict=False`` loads the rows present), non-positive rate.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..trial import MarkerTrial
from ._markerio import PathLike, Report, parse_units, unique_labels, unit_scale

__all__ = ["load_trc", "write_trc"]

_NAN_WORDS = ("nan", "#qnan", "#ind", "n/a", "#n/a")


def _to_float(s: str) -> float:
    s = s.strip()
    if not s:
        return math.nan
    try:
        return float(s)
    except ValueError:
        low = s.lower()
        if any(w in low for w in _NAN_WORDS):
            return math.nan
        raise


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _split(line: str) -> list[str]:
    if "\t" in line:
        return line.split("\t")
    return line.split()


def load_trc(
    path: PathLike,
    *,
    units: Optional[str] = None,
    unlabeled: str = "keep",
    strict: bool = True,
) -> MarkerTrial:
    """Read a TRC file into a :class:`MarkerTrial` (metres, NaN gaps).

    Args:
        path: the ``.trc`` file.
        units: override the file's ``Units`` field (``"mm"``, ``"cm"``, ``"m"``) when it is
            missing or wrong.
        unlabeled: data columns beyond the labelled markers: ``"keep"`` (as ``unlabeled_<k>``),
            ``"drop"`` (reported) or ``"error"``.
        strict: if ``True`` (default) fewer data rows than ``NumFrames`` is an error (truncated
            file); if ``False`` the rows present are loaded and the shortfall reported.

    Returns:
        ``MarkerTrial`` with ``xyz (T, M, 3)`` float64 metres in the file's (lab) frame,
        ``time (T,)`` s from the Time column, ``rate`` Hz from ``DataRate``, ``units`` as read,
        ``meta``: ``header`` (dict of the header fields), ``first_frame``, ``warnings``,
        ``renamed`` (new label -> label in the file).

    Raises:
        DataFileError: the file cannot be read as TRC (message names file, line and fix).
    """
    if unlabeled not in ("keep", "drop", "error"):
        raise ValueError(f"unlabeled must be 'keep', 'drop' or 'error', not {unlabeled!r}")
    p = Path(os.fspath(path))
    rep = Report(str(p))
    if not p.is_file():
        raise rep.error("no such file")
    text = _read_text(p)
    if not text.strip():
        raise rep.error("empty file (0 lines of data); expected a TRC header starting with 'PathFileType'")
    lines = text.splitlines()
    n = len(lines)

    def need(i: int, what: str) -> str:
        if i >= n:
            raise rep.error(
                f"unexpected end of file at line {i + 1}: the header is incomplete (expected {what}); "
                "the file is truncated"
            )
        return lines[i]

    first = need(0, "'PathFileType ...'")
    if not first.strip().lower().startswith("pathfiletype"):
        raise rep.error(
            f"line 1 is {first[:40]!r}, not a TRC header ('PathFileType\\t4\\t(X/Y/Z)\\t<name>'); "
            "is this a TRC file?"
        )
    keys = [k.strip() for k in _split(need(1, "the header keys 'DataRate CameraRate NumFrames ...'"))]
    vals = [v.strip() for v in _split(need(2, "the header values (data rate, frames, markers, units ...)"))]
    header = {k: v for k, v in zip(keys, vals) if k}
    if "DataRate" not in header and "NumMarkers" not in header:
        raise rep.error(
            f"line 2 should name the header fields (DataRate, CameraRate, NumFrames, NumMarkers, Units, ...); "
            f"found {keys[:8]}"
        )
    label_fields = _split(need(3, "the marker labels 'Frame# Time <label> ...'"))
    # the X1 Y1 Z1 line is optional in some writers: detect it
    data_start = 4
    if n > 4:
        sub = [f.strip() for f in _split(lines[4])]
        if any(f[:1] in ("X", "Y", "Z", "x", "y", "z") and f[1:].isdigit() for f in sub if f):
            data_start = 5

    # --- header values -------------------------------------------------------------------
    def hnum(key: str, kind=float, default=None):
        v = header.get(key)
        if v is None or v == "":
            return default
        try:
            return kind(float(v))
        except ValueError:
            raise rep.error(f"line 3: {key} = {v!r} is not a number") from None

    rate = hnum("DataRate")
    n_frames_hdr = hnum("NumFrames", int)
    n_markers_hdr = hnum("NumMarkers", int)
    if units is not None:
        units_c = parse_units(units)
        if units_c is None:
            raise ValueError(f"units={units!r}: use 'mm', 'cm' or 'm'")
        if header.get("Units") and parse_units(header["Units"]) not in (None, units_c):
            rep.warn(f"file says Units={header['Units']!r}; overridden by units={units!r}")
    else:
        units_c = parse_units(header.get("Units"))
        if units_c is None:
            raise rep.error(
                f"line 3: Units = {header.get('Units')!r} is not a length unit this reader knows "
                "('mm', 'cm', 'm'); pass units='mm' (or 'cm', 'm') to load_trc to say what it is"
            )
    units_name, scale = units_c

    # --- labels --------------------------------------------------------------------------
    raw_labels = [f.strip() for f in label_fields[2:] if f.strip()]
    if label_fields and label_fields[0].strip().lower() not in ("frame#", "frame"):
        rep.warn(f"line 4 starts with {label_fields[0]!r}, expected 'Frame#'; read as labels anyway")

    # --- data rows -----------------------------------------------------------------------
    rows: list[list[str]] = []
    row_lines: list[int] = []
    for i in range(data_start, n):
        f = _split(lines[i])
        if not any(x.strip() for x in f):
            continue  # blank line (possibly only tabs)
        rows.append(f)
        row_lines.append(i + 1)
    if not rows:
        raise rep.error(
            f"no data rows after the header (file ends at line {n}); header says NumFrames={n_frames_hdr}"
        )
    T = len(rows)
    width = 0  # number of marker column groups that carry a value in some row
    for f in rows:
        last = len(f) - 1
        while last >= 2 and not f[last].strip():
            last -= 1
        width = max(width, (last - 2) // 3 + 1 if last >= 2 else 0)
    L = len(raw_labels)
    if n_markers_hdr is not None and n_markers_hdr != L:
        rep.warn(f"line 3 says NumMarkers={n_markers_hdr} but line 4 has {L} labels; using the {L} labels")
    names = list(raw_labels)
    M = L
    if width > L:
        extra = width - L
        if unlabeled == "error":
            raise rep.error(
                f"data rows carry values for {width} markers but only {L} are labelled on line 4; "
                "pass unlabeled='keep' or 'drop' to load_trc"
            )
        if unlabeled == "keep":
            names += [f"unlabeled_{k + 1}" for k in range(L, width)]
            M = width
            rep.warn(f"{extra} data column group(s) beyond the {L} labels kept as unlabeled_{L + 1}..unlabeled_{width}")
        else:
            rep.warn(f"{extra} data column group(s) beyond the {L} labels dropped (unlabeled='drop')")
    names, renamed = unique_labels(names, rep)

    data = np.full((T, M, 3), np.nan)
    frames = np.empty(T, dtype=np.int64)
    time = np.empty(T)
    short = partial = 0
    for r, (f, ln) in enumerate(zip(rows, row_lines)):
        try:
            frames[r] = int(float(f[0])) if f[0].strip() else r + 1
        except ValueError:
            raise rep.error(f"line {ln}, column 1 (Frame#): {f[0]!r} is not a frame number") from None
        if len(f) < 2 or not f[1].strip():
            raise rep.error(f"line {ln}: the Time column is blank; every row needs a time")
        try:
            time[r] = float(f[1])
        except ValueError:
            raise rep.error(f"line {ln}, column 2 (Time): {f[1]!r} is not a number") from None
        if len(f) - 2 < 3 * M:
            short += 1
    W = 3 * M
    try:  # fast path: numpy parses the whole table at once
        pad = [""] * W
        flat = [c if c.strip() else "nan" for f in rows for c in (f[2 : 2 + W] + pad[: max(0, W - len(f) + 2)])]
        data = np.array(flat, dtype=np.float64).reshape(T, M, 3)
    except ValueError:  # a quirky or bad field somewhere: field by field, with the exact place
        for r, (f, ln) in enumerate(zip(rows, row_lines)):
            for j, sv in enumerate(f[2 : 2 + W]):
                try:
                    data[r, j // 3, j % 3] = _to_float(sv)
                except ValueError:
                    mk = names[j // 3] if j // 3 < len(names) else "?"
                    raise rep.error(
                        f"line {ln}, column {j + 3} (marker {mk!r}, {'XYZ'[j % 3]}): {sv.strip()!r} is not a number; "
                        "missing samples must be blank or NaN"
                    ) from None
    if np.isinf(data).any():
        r, m, _ = np.argwhere(np.isinf(data))[0]
        raise rep.error(f"line {row_lines[r]}: marker {names[m]!r} has an infinite coordinate")
    some = np.isnan(data).any(-1) & ~np.isnan(data).all(-1)
    if some.any():
        partial = int(some.sum())
        data[some] = np.nan
        rep.warn(f"{partial} sample(s) with only some of X/Y/Z present treated as missing")
    if n_frames_hdr is not None and T != n_frames_hdr:
        if T < n_frames_hdr and strict:
            raise rep.error(
                f"header (line 3) says NumFrames={n_frames_hdr} but the file has {T} data rows "
                f"(last at line {row_lines[-1]}): truncated? pass strict=False to load_trc to load the {T} rows"
            )
        rep.warn(f"header says NumFrames={n_frames_hdr}; the file has {T} data rows; loaded {T}")
    if rate is None or not rate > 0:
        dt = np.diff(time)
        if T > 1 and np.all(dt > 0):
            rate = float(1.0 / np.median(dt))
            rep.warn(f"DataRate missing or not positive; {rate:g} Hz taken from the Time column")
        else:
            raise rep.error("line 3: DataRate is missing or not positive and the Time column cannot replace it")
    if T > 1 and not np.all(np.diff(time) > 0):
        k = int(np.argmin(np.diff(time) > 0))
        if np.all(np.diff(frames) > 0):  # e.g. times printed with too few decimals
            bad_t = time[k + 1]
            time = time[0] + (frames - frames[0]) / rate
            rep.warn(
                f"line {row_lines[k + 1]}: Time {bad_t:g} does not increase; times recomputed "
                f"from Frame# and DataRate={rate:g} Hz"
            )
        else:
            raise rep.error(
                f"line {row_lines[k + 1]}: time {time[k + 1]} does not increase (previous {time[k]}) "
                "and the frame numbers cannot replace it"
            )

    meta = {
        "format": "trc",
        "header": header,
        "first_frame": int(frames[0]),
        "frames": frames,
        "short_rows": short,
        "warnings": list(rep.messages),
        "renamed": renamed,
    }
    return MarkerTrial(
        names=tuple(names),
        xyz=torch.from_numpy(data * scale),
        rate=float(rate),
        time=torch.from_numpy(time),
        units=units_name,
        source=str(p),
        meta=meta,
    )


def _fmt(x: float, float_format: str, missing: str) -> str:
    return missing if x != x else float_format % x


def write_trc(
    path: PathLike,
    trial: MarkerTrial,
    *,
    units: Optional[str] = None,
    float_format: str = "%.10g",
    missing: str = "NaN",
    first_frame: Optional[int] = None,
) -> Path:
    """Write ``trial`` as a TRC file that OpenSim (``TimeSeriesTableVec3``/``MarkerData``),
    Mokka and :func:`load_trc` read.

    Args:
        path: output file.
        trial: markers ``xyz (T, M, 3)`` in metres (written in ``units``), times ``(T,)`` s.
        units: unit to write (``"mm"``, ``"cm"``, ``"m"``); default ``trial.units``.
        float_format: printf format of coordinates (default 10 significant digits).
        missing: text for a missing sample (``"NaN"``, OpenSim's choice, or ``""``).
        first_frame: number of the first row (default ``trial.meta["first_frame"]`` or 1).

    Returns:
        the path written.
    """
    p = Path(os.fspath(path))
    u = units or trial.units or "m"
    s = unit_scale(u)
    u = parse_units(u)[0]  # type: ignore[index]
    for nm in trial.names:
        if not nm or any(c in nm for c in "\t\r\n"):
            raise ValueError(f"write_trc {p}: marker label {nm!r} is empty or contains tabs/newlines; rename it")
    xyz = trial.xyz.detach().to(torch.float64).cpu().numpy() / s
    t = trial.time.detach().to(torch.float64).cpu().numpy()
    T, M, _ = xyz.shape
    f0 = first_frame if first_frame is not None else int(trial.meta.get("first_frame", 1) or 1)
    rate = f"{trial.rate:.10g}"
    out = [
        f"PathFileType\t4\t(X/Y/Z)\t{p.name}",
        "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames",
        f"{rate}\t{rate}\t{T}\t{M}\t{u}\t{rate}\t{f0}\t{T}",
        "Frame#\tTime\t" + "\t\t\t".join(trial.names) + ("\t\t" if M else ""),
        "\t\t" + "\t".join(f"X{k + 1}\tY{k + 1}\tZ{k + 1}" for k in range(M)),
        "",
    ]
    flat = xyz.reshape(T, M * 3)
    for r in range(T):
        vals = "\t".join(_fmt(float(x), float_format, missing) for x in flat[r])
        out.append(f"{f0 + r}\t{t[r]:.10g}\t{vals}" if M else f"{f0 + r}\t{t[r]:.10g}")
    p.write_text("\n".join(out) + "\n", encoding="utf-8")
    return p
