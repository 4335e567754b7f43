"""Pure-Python reading of the C3D container (header, parameter section, 3-D point data).

Used (1) to validate a file before the native reader (ezc3d) touches it, so that malformed
bytes raise a :class:`DataFileError` instead of taking the process down, and (2) as the reader
for what ezc3d refuses (SGI/MIPS big-endian files) or for a truncated data section.

Facts of the format used here (C3D user guide, c3d.org): 512-byte blocks; block 1 is the
header (byte 1 = parameter block number, byte 2 = 0x50; 16-bit words: 2 points per frame,
3 analog samples per frame, 4/5 first/last frame, 7-8 scale factor (float; negative = float
data), 9 data start block, 11-12 frame rate); the parameter section starts with 4 bytes
(reserved, reserved, number of blocks, processor type 84 Intel / 85 DEC / 86 MIPS) followed by
group and parameter records (name length (negative = locked), id (negative = group), name,
16-bit offset to the next record, then for a parameter: type (-1 char, 1 byte, 2 int16,
4 float), number of dimensions, dimensions, data, description). DEC floats are VAX F-floats:
16-bit halves swapped relative to IEEE little-endian, and 4 times larger.
"""
from __future__ import annotations

import dataclasses
import re
import struct
from typing import Any, Optional

import numpy as np

from ._markerio import Report

PROCESSORS = {84: "intel", 85: "dec", 86: "mips"}
MAX_RECORDS = 20000
_NAME = re.compile(r"^[A-Z0-9_][A-Z0-9_ ]*$")


@dataclasses.dataclass
class C3DInfo:
    processor: str
    n_points: int  # header word 2
    analog_per_frame: int  # header word 3 (all channels x samples)
    first_frame: int  # 1-based, header word 4 (or TRIAL:ACTUAL_START_FIELD); 0 for 0-based writers
    last_frame: int
    n_frames: int  # see read_structure for the rules (header, POINT:FRAMES, TRIAL fields)
    scale: float
    data_start: int  # 1-based block
    rate: float
    params: dict  # GROUP -> {NAME: value}
    # departures from the format that were tolerated; a non-empty list keeps the file away from
    # native readers in this process (see c3d.load_c3d)
    irregular: list
    param_end: int  # byte offset after the parameter section
    size: int
    # where n_frames came from: "header", "POINT:FRAMES", "header and POINT:FRAMES" (agreeing),
    # "TRIAL:ACTUAL_START_FIELD/ACTUAL_END_FIELD" (trials longer than 65535 frames) or
    # "data section (16-bit fields saturated)" (a count of 65535: every complete frame read)
    frames_from: str = "header"
    # integer storage: file units per integer step, |POINT:SCALE| (as ezc3d), else |header scale|
    int_scale: float = 0.0

    @property
    def is_float(self) -> bool:
        return self.scale < 0

    @property
    def frame_bytes(self) -> int:
        return (4 * self.n_points + self.analog_per_frame) * (4 if self.is_float else 2)

    def param(self, group: str, name: str, default: Any = None) -> Any:
        return self.params.get(group, {}).get(name, default)


def _dec_to_ieee(b: bytes) -> np.ndarray:
    w = np.frombuffer(b, "<u2").reshape(-1, 2)[:, ::-1].copy()
    return w.view("<f4").reshape(-1).astype(np.float64) / 4.0


def _floats(b: bytes, proc: str) -> np.ndarray:
    if proc == "dec":
        return _dec_to_ieee(b)
    return np.frombuffer(b, ">f4" if proc == "mips" else "<f4").astype(np.float64)


def _ints(b: bytes, proc: str) -> np.ndarray:
    return np.frombuffer(b, ">i2" if proc == "mips" else "<i2").astype(np.int64)


def _decode_value(ptype: int, dims: tuple[int, ...], raw: bytes, proc: str) -> Any:
    if ptype == -1:
        text = raw.decode("latin-1")
        if len(dims) == 0:
            return text.rstrip(" \x00")
        if len(dims) == 1:
            return text.rstrip(" \x00")
        n = dims[0]
        count = int(np.prod(dims[1:]))
        return [text[i * n : (i + 1) * n].rstrip(" \x00") for i in range(count)]
    if ptype == 1:
        arr = np.frombuffer(raw, np.uint8).astype(np.int64)
    elif ptype == 2:
        arr = _ints(raw, proc)
    else:
        arr = _floats(raw, proc)
    if len(dims) > 1:
        arr = arr.reshape(tuple(reversed(dims)))
    return arr


def read_structure(buf: bytes, rep: Report) -> C3DInfo:
    """Validate and decode header and parameters; raises ``DataFileError`` naming the byte
    offset and the cause for anything malformed."""
    size = len(buf)
    if size == 0:
        raise rep.error("empty file (0 bytes); not a C3D file")
    if size < 512:
        raise rep.error(f"truncated: {size} bytes, but a C3D header alone is 512 bytes")
    pblock, key = buf[0], buf[1]
    if key != 0x50:
        raise rep.error(f"not a C3D file: byte 2 is 0x{key:02x}, a C3D header has 0x50 there")
    if pblock < 2:
        raise rep.error(f"corrupt header: parameter section said to start at block {pblock} (must be >= 2)")
    poff = (pblock - 1) * 512
    if poff + 4 > size:
        raise rep.error(
            f"corrupt header: parameter section at byte {poff} (block {pblock}) is past the end of the file ({size} bytes)"
        )
    nblocks, ptype_byte = buf[poff + 2], buf[poff + 3]
    proc = PROCESSORS.get(ptype_byte)
    if proc is None:
        raise rep.error(
            f"corrupt parameter section: processor type byte at offset {poff + 3} is {ptype_byte}; "
            "expected 84 (Intel), 85 (DEC) or 86 (SGI/MIPS)"
        )
    e = ">" if proc == "mips" else "<"

    def word(i: int) -> int:  # 1-based 16-bit word of the header, unsigned
        return struct.unpack_from(e + "H", buf, 2 * (i - 1))[0]

    def hfloat(i: int) -> float:
        b = bytes(buf[2 * (i - 1) : 2 * (i - 1) + 4])
        return float(_floats(b, proc)[0])

    n_points = word(2)
    analog_per_frame = word(3)
    first, last = word(4), word(5)
    scale = hfloat(7)
    data_start = word(9)
    rate = hfloat(11)

    # --- parameter records ---------------------------------------------------------------
    declared_end = poff + 512 * nblocks if nblocks else size
    # records may run past the declared block count (BTK's parameterOverflow sample); they are
    # accepted up to the data section (or the end of the file) and the overflow reported
    pend = size
    if data_start > pblock:
        pend = min(size, (data_start - 1) * 512)
    groups: dict[int, str] = {}
    irregular: list[str] = []
    raw_params: list[tuple[int, str, int, tuple, bytes]] = []
    i = poff + 4
    nrec = 0
    while True:
        if i + 2 > pend:
            break  # no terminating record: the section simply ends
        nch = struct.unpack_from("b", buf, i)[0]
        gid = struct.unpack_from("b", buf, i + 1)[0]
        if nch == 0 or gid == 0:
            break
        nlen = abs(nch)
        j = i + 2 + nlen
        if j + 2 > pend:
            raise rep.error(f"corrupt parameter section: record at byte {i} runs past the section end (byte {pend})")
        name = bytes(buf[i + 2 : j]).decode("latin-1").strip().upper()
        if not name or any(ord(c) < 32 or ord(c) > 126 for c in name):
            raise rep.error(f"corrupt parameter section: record at byte {i} has an unreadable name {name!r}")
        off = struct.unpack_from(e + "H", buf, j)[0]
        if off and j + off > pend and proc == "mips":
            # some SGI writers stored this offset little-endian; accept it when that fits
            alt = struct.unpack_from("<H", buf, j)[0]
            if 0 < j + alt <= pend:
                off = alt
                irregular.append(f"little-endian record offset at byte {j}")
        k = j + 2
        if not _NAME.match(name):
            irregular.append(f"record name {name!r} at byte {i}")
        if off > 32767:
            irregular.append(f"record offset {off} > 32767 at byte {j}")
        if gid < 0:
            if k + 1 > pend:
                raise rep.error(f"corrupt parameter section: group {name!r} at byte {i} is cut off")
            if -gid in groups:
                irregular.append(f"group id {-gid} declared twice (byte {i})")
            groups[-gid] = name
            dlen = buf[k]
            if off and k + 1 + dlen > j + off:
                irregular.append(f"group {name!r} description overruns its record (byte {i})")
        else:
            if k + 2 > pend:
                raise rep.error(f"corrupt parameter section: parameter {name!r} at byte {i} is cut off")
            ptype = struct.unpack_from("b", buf, k)[0]
            ndim = buf[k + 1]
            if ptype not in (-1, 1, 2, 4):
                raise rep.error(
                    f"corrupt parameter section: parameter {name!r} at byte {i} has data type {ptype} "
                    "(valid: -1 char, 1 byte, 2 int16, 4 float)"
                )
            if ndim > 7 or k + 2 + ndim > pend:
                raise rep.error(f"corrupt parameter section: parameter {name!r} at byte {i} has {ndim} dimensions")
            dims = tuple(buf[k + 2 : k + 2 + ndim])
            nbytes = abs(ptype) * int(np.prod(dims, dtype=np.int64)) if ndim else abs(ptype)
            d0 = k + 2 + ndim
            if d0 + nbytes > pend:
                raise rep.error(
                    f"corrupt parameter section: parameter {name!r} at byte {i} declares {nbytes} bytes of data "
                    f"(dimensions {dims}), past the end of the section (byte {pend})"
                )
            raw_params.append((gid, name, ptype, dims, bytes(buf[d0 : d0 + nbytes])))
            if d0 + nbytes + 1 > pend:
                irregular.append(f"parameter {name!r} has no description byte (byte {i})")
            else:
                dlen = buf[d0 + nbytes]
                if off and d0 + nbytes + 1 + dlen > j + off:
                    irregular.append(f"parameter {name!r} description overruns its record (byte {i})")
        nrec += 1
        if nrec > MAX_RECORDS:
            raise rep.error(f"corrupt parameter section: more than {MAX_RECORDS} records")
        if off == 0:
            break
        nxt = j + off
        if nxt <= i:
            raise rep.error(f"corrupt parameter section: record {name!r} at byte {i} points backwards (offset {off})")
        if nxt > pend:
            raise rep.error(
                f"corrupt parameter section: record {name!r} at byte {i} points to byte {nxt}, past the section end ({pend})"
            )
        i = nxt
    if i > declared_end:
        irregular.append("parameter records past the declared block count")
        rep.warn(
            f"parameter records run to byte {i}, past the {nblocks} block(s) declared at byte {poff + 2}; read anyway"
        )
    params: dict[str, dict[str, Any]] = {name: {} for name in groups.values()}
    for gid, name, ptype, dims, raw in raw_params:
        g = groups.get(gid)
        if g is None:
            irregular.append(f"parameter {name!r} of undeclared group {gid}")
            continue  # parameter of an undeclared group: ignored like other readers
        params[g][name] = _decode_value(ptype, dims, raw, proc)

    def pint(group: str, name: str) -> Optional[int]:
        v = params.get(group, {}).get(name)
        if isinstance(v, np.ndarray) and v.size:
            x = int(v.reshape(-1)[0])
            return x + 65536 if x < 0 else x
        return None

    # --- storage: float where the header scale is negative; integers scaled by POINT:SCALE ---
    int_scale = abs(scale)
    ps = params.get("POINT", {}).get("SCALE")
    psv = abs(float(ps.reshape(-1)[0])) if isinstance(ps, np.ndarray) and ps.size else 0.0
    if np.isfinite(psv) and psv != 0:
        if scale >= 0 and n_points and abs(psv - int_scale) > 1e-6 * psv:
            rep.warn(f"header scale factor {scale:g} differs from POINT:SCALE {psv:g}; using POINT:SCALE")
        int_scale = psv

    # --- where the data start ------------------------------------------------------------
    # header word 9 (what ezc3d uses); POINT:DATA_START only where the header's is unusable
    def usable_start(block: Optional[int]) -> bool:
        return block is not None and block >= 2 and (block - 1) * 512 >= poff + 4 and (block - 1) * 512 <= size

    if n_points and not usable_start(data_start):
        pds = pint("POINT", "DATA_START")
        if usable_start(pds):
            assert pds is not None
            irregular.append(f"header word 9 (data start) is {data_start}")
            rep.warn(f"header word 9 says the data start at block {data_start}; POINT:DATA_START = {pds} used")
            data_start = pds
    if n_points and data_start < 2:
        raise rep.error(f"corrupt header: data section said to start at block {data_start}")
    dstart = (data_start - 1) * 512
    if n_points and dstart < poff + 4:
        raise rep.error(
            f"corrupt header: data section (block {data_start}) starts before the parameter section (block {pblock})"
        )

    # --- how many frames -----------------------------------------------------------------
    # 1. header words 4-5: first..last frame, 16-bit unsigned, 1-based; a first frame of 0 is
    #    a writer counting from 0 (last is then 0-based too: last + 1 frames, as ezc3d reads it)
    # 2. POINT:FRAMES, when present and non-zero, is the frame count (ezc3d's rule): int16,
    #    wrapped past 32767 (unsigned), or a float. Where it and the header disagree, the one the
    #    data section holds wins (a stale header or a stale POINT:FRAMES), POINT:FRAMES if both.
    # 3. TRIAL:ACTUAL_START_FIELD / ACTUAL_END_FIELD (32-bit, two 16-bit words each, low word
    #    first) only for trials past frame 65535, which the 16-bit fields cannot hold: used
    #    where those are saturated (65535) or hold the TRIAL count modulo 65536 (POINT:FRAMES
    #    where present, else the header), and the data section holds the frames; otherwise they
    #    are acquisition numbers (a cropped trial keeps them) and say nothing about the file.
    # 4. a count of exactly 65535, or a header last frame of 65535 (and no TRIAL fields used),
    #    may mean "more": then every complete frame of the data section is read (below).
    pf: Optional[int] = None
    pf_raw = params.get("POINT", {}).get("FRAMES")
    if isinstance(pf_raw, np.ndarray) and pf_raw.size:
        v = float(pf_raw.reshape(-1)[0])
        if np.isfinite(v):
            pf = int(v)
            if pf < 0 and pf_raw.dtype.kind in "iu":
                pf += 65536  # int16 holding 32768..65535
            if pf <= 0:
                pf = None  # 0: not filled in (Kistler writes no points)
    last_word = last
    n_frames = last - first + 1 if last >= first else 0
    wbytes = 4 if scale < 0 else 2

    # end of the point/analog data: the ROTATION section where there is one, else the file end
    data_end = size
    rot = pint("ROTATION", "DATA_START")
    if rot is not None and dstart < (rot - 1) * 512 < size:
        data_end = (rot - 1) * 512

    # frame layout: header words 2 (points) and 3 (analog words); ezc3d takes POINT:USED and
    # ANALOG:USED x ANALOG:RATE / POINT:RATE instead. Where they differ, the parameters are used
    # where the data section is exactly as long as they say (up to the zero padding of the last
    # block); otherwise the header (reported)
    used = pint("POINT", "USED")
    a_par = analog_per_frame
    a_used = pint("ANALOG", "USED")
    a_rate, p_rate = params.get("ANALOG", {}).get("RATE"), params.get("POINT", {}).get("RATE")
    if (
        a_used is not None
        and isinstance(a_rate, np.ndarray) and a_rate.size
        and isinstance(p_rate, np.ndarray) and p_rate.size and float(p_rate.reshape(-1)[0]) > 0
    ):
        ratio = float(a_rate.reshape(-1)[0]) / float(p_rate.reshape(-1)[0])
        if np.isfinite(ratio) and 0 <= ratio < 65536 and abs(ratio - round(ratio)) < 1e-6:
            a_par = a_used * int(round(ratio))
    p_par = n_points if used is None else used
    if (p_par, a_par) != (n_points, analog_per_frame):
        counts = [n for n in (n_frames, pf) if n]

        def exact(p: int, a: int) -> bool:  # the data end there, or zero padding follows
            for n in counts:
                end = dstart + n * (4 * p + a) * wbytes
                if 0 <= data_end - end < 512 and not any(buf[end:data_end]):
                    return True
            return False

        if counts and dstart >= poff + 4 and exact(p_par, a_par):
            irregular.append("header words 2-3 (points, analog words per frame) disagree with POINT/ANALOG")
            rep.warn(
                f"header words 2-3 say {n_points} points and {analog_per_frame} analog words per frame, the "
                f"parameters (POINT:USED, ANALOG:USED x ANALOG:RATE / POINT:RATE) {p_par} and {a_par}; the "
                "data section holds the latter: used"
            )
            n_points, analog_per_frame = p_par, a_par
        elif p_par != n_points:
            rep.warn(
                f"header says {n_points} points per frame, POINT:USED says {p_par}; using the header (data layout)"
            )
    fbytes = (4 * n_points + analog_per_frame) * wbytes

    def holds(n: int) -> bool:
        return fbytes == 0 or dstart + n * fbytes <= data_end

    frames_from = "header"
    if first == 0 and n_frames > 1 and not holds(n_frames) and holds(n_frames - 1):
        # 0..last read as 0-based does not fit, 1..last does: the writer meant a count
        rep.warn(f"header frames 0..{last}: read as {last} frames (1..{last}), what the data section holds")
        first, n_frames = 1, last
    if pf is not None and pf != n_frames:
        if holds(pf) or not holds(n_frames) or n_frames == 0:
            rep.warn(
                f"header frames {first}..{last} ({n_frames} frames) and POINT:FRAMES = {pf} disagree; "
                f"using POINT:FRAMES"
            )
            last, n_frames, frames_from = first + pf - 1, pf, "POINT:FRAMES"
        else:
            rep.warn(
                f"POINT:FRAMES = {pf}, but the data section holds only the {n_frames} frames of the header "
                f"({first}..{last}); using the header"
            )
    elif pf is not None:
        frames_from = "header and POINT:FRAMES"
    st, en = params.get("TRIAL", {}).get("ACTUAL_START_FIELD"), params.get("TRIAL", {}).get("ACTUAL_END_FIELD")
    if isinstance(st, np.ndarray) and isinstance(en, np.ndarray) and st.size >= 2 and en.size >= 2:
        if st.dtype.kind in "iu" and en.dtype.kind in "iu":
            s32 = int(st.reshape(-1)[0] & 0xFFFF) + (int(st.reshape(-1)[1] & 0xFFFF) << 16)
            e32 = int(en.reshape(-1)[0] & 0xFFFF) + (int(en.reshape(-1)[1] & 0xFFFF) << 16)
            nt = e32 - s32 + 1
            if pf is None:  # the header alone: its last frame saturated, or wrapped
                beyond = last_word == 0xFFFF or nt % 0x10000 == n_frames % 0x10000
            else:  # POINT:FRAMES saturated, or wrapped
                beyond = nt > 0xFFFF and (pf == 0xFFFF or nt % 0x10000 == pf % 0x10000)
            if e32 >= s32 and e32 > 0xFFFF and nt > n_frames and beyond:
                if holds(nt) or not holds(n_frames):
                    rep.warn(
                        f"{nt} frames: more than the 16-bit header and POINT:FRAMES hold ({n_frames}); "
                        f"frames {s32}..{e32} of TRIAL:ACTUAL_START_FIELD/ACTUAL_END_FIELD used"
                    )
                    first, last, n_frames, frames_from = s32, e32, nt, "TRIAL:ACTUAL_START_FIELD/ACTUAL_END_FIELD"
                else:  # a trial cropped from a longer acquisition
                    rep.warn(
                        f"TRIAL:ACTUAL_START_FIELD/ACTUAL_END_FIELD span {nt} frames ({s32}..{e32}), more than the "
                        f"data section holds; the {n_frames} frames of the header/POINT:FRAMES used"
                    )
    if (
        fbytes
        and dstart >= poff + 4
        and not frames_from.startswith("TRIAL")
        and (n_frames == 0xFFFF or last_word == 0xFFFF)
    ):
        # the 16-bit fields are saturated: 65535 is also what a 16-bit writer puts for "more".
        # Every complete frame of the data section is read (as ezc3d does for a count of 65535)
        # -- up to the ROTATION section where there is one, and without the all-zero frames
        # that pad the last 512-byte block -- where the count says 65535, where the header's
        # last frame is 65535 and POINT:FRAMES says nothing, or where POINT:FRAMES holds that
        # number of frames modulo 65536 (an int16 wrapped twice)
        avail = max(0, (data_end - dstart) // fbytes)
        if avail > n_frames:
            tail = np.frombuffer(buf, np.uint8, count=(avail - n_frames) * fbytes, offset=dstart + n_frames * fbytes)
            nonzero = np.flatnonzero(tail.reshape(-1, fbytes).any(axis=1))
            n_all = n_frames + (int(nonzero[-1]) + 1 if nonzero.size else 0)
            if n_all > n_frames and (
                n_frames == 0xFFFF or pf is None or (n_all > 0xFFFF and n_all % 0x10000 == pf % 0x10000)
            ):
                rep.warn(
                    f"{n_frames} frames by the header ({first}..{last_word}) and POINT:FRAMES ({pf}), at the 16-bit "
                    f"limit; the data section holds {n_all}: all read"
                )
                last, n_frames, frames_from = first + n_all - 1, n_all, "data section (16-bit fields saturated)"
    return C3DInfo(
        processor=proc,
        n_points=n_points,
        analog_per_frame=analog_per_frame,
        first_frame=first,
        last_frame=last,
        n_frames=n_frames,
        scale=scale,
        data_start=data_start,
        rate=rate,
        params=params,
        irregular=irregular,
        param_end=pend,
        size=size,
        frames_from=frames_from,
        int_scale=int_scale,
    )


def frames_present(info: C3DInfo) -> int:
    """Whole frames the file actually holds after the data start."""
    fb = info.frame_bytes
    if fb == 0:
        return info.n_frames
    avail = info.size - (info.data_start - 1) * 512
    return max(0, min(info.n_frames, avail // fb))


def read_points(buf: bytes, info: C3DInfo, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Point data of the first ``n_frames`` frames: ``(xyz (T, P, 3) in file units, valid (T, P))``.
    A point is invalid where its residual word is negative."""
    P = info.n_points
    T = n_frames
    if T == 0 or P == 0:
        return np.zeros((T, P, 3)), np.zeros((T, P), dtype=bool)
    off = (info.data_start - 1) * 512
    fb = info.frame_bytes
    block = bytes(buf[off : off + T * fb])
    if info.is_float:
        words = _floats(block, info.processor).reshape(T, -1)
    else:
        words = _ints(block, info.processor).reshape(T, -1).astype(np.float64)
    pts = words[:, : 4 * P].reshape(T, P, 4)
    xyz = pts[..., :3] if info.is_float else pts[..., :3] * (info.int_scale or abs(info.scale))
    valid = pts[..., 3] >= 0
    return xyz, valid
