"""Motion/storage tables: round trips, OpenSim reading our files, and OpenSim's own IK results
reproduced through kinfunc FK (marker errors to 0.01 mm)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kinfunc as kf
from kinfunc.io import (
    MotionFileError,
    load_ik_setup,
    load_osim,
    read_mot,
    read_sto,
    write_mot,
    write_sto,
)

from .shared import data as _shared


def _arm() -> kf.Model:
    """A small model with rotational, translational and coupled coordinates."""
    mb = kf.ModelBuilder("arm")
    mb.add_body("base", kf.Joint.slider("slide", "ground", "base_tx", axis=(1, 0, 0)))
    mb.add_body("upper", kf.Joint.ball("shoulder", "base", ("sh_x", "sh_y", "sh_z"), parent_location=(0, 0.2, 0)))
    mb.add_body("lower", kf.Joint.pin("elbow", "upper", "elbow_flex", parent_location=(0, -0.3, 0)))
    mb.add_body("hand", kf.Joint.pin("wrist", "lower", "wrist_flex", parent_location=(0, -0.25, 0)))
    mb.add_coupler("wrist_flex", "elbow_flex", kf.functions.Linear(0.5, 0.1))
    mb.add_marker("m_hand", "hand", (0.0, -0.05, 0.01))
    mb.add_marker("m_upper", "upper", (0.02, -0.1, 0.0))
    return mb.build(torch.float64)


class _Result:
    def __init__(self, q, time, model):
        self.q, self.time, self.model = q, time, model


# ------------------------------------------------------------------------------ round trips
@settings(max_examples=15, deadline=None)
@given(st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_write_read_mot_roundtrip(tmp_path_factory, T, seed):
    model = _arm()
    rng = np.random.default_rng(seed)
    q = torch.from_numpy(rng.uniform(-3, 3, (T, len(model.coordinate_names))))
    time = torch.from_numpy(np.round(np.cumsum(rng.uniform(0.001, 0.1, T)), 6))
    path = tmp_path_factory.mktemp("mot") / "q.mot"
    write_mot(path, _Result(q, time, model))
    back = read_mot(path, model=model)
    assert back.in_degrees is True
    assert back.names == model.coordinate_names + ("wrist_flex",)
    torch.testing.assert_close(back.q_for(model), q, atol=6e-9, rtol=0)  # 8 decimals (deg, m)
    torch.testing.assert_close(back.time, time, atol=1e-8, rtol=0)
    # the coupled coordinate is written from q, in degrees
    wrist = 0.5 * q[:, model.topology.coordinate_index("elbow_flex")] + 0.1
    torch.testing.assert_close(back.column("wrist_flex"), wrist, atol=1e-9, rtol=0)
    # degrees on disk for rotations, metres for translations
    raw = read_sto(path)
    i = model.topology.coordinate_index("sh_y")
    torch.testing.assert_close(raw.column("sh_y"), q[:, i] * 180 / math.pi, atol=1e-7, rtol=0)
    torch.testing.assert_close(raw.column("base_tx"), q[:, 0], atol=1e-8, rtol=0)


def test_write_mot_keywords_and_errors(tmp_path):
    model = _arm()
    q = torch.zeros(3, len(model.coordinate_names))
    write_mot(tmp_path / "a.mot", q=q, time=[0.0, 0.1, 0.2], model=model)
    assert read_mot(tmp_path / "a.mot", model=model).values.shape == (3, len(model.coordinate_names) + 1)
    with pytest.raises(ValueError, match="coordinates"):
        write_mot(tmp_path / "b.mot", q=torch.zeros(3, 2), time=[0, 1, 2], model=model)
    with pytest.raises(ValueError, match="give a result"):
        write_mot(tmp_path / "c.mot", q=q)
    with pytest.raises(ValueError, match="times"):
        write_mot(tmp_path / "d.mot", q=q, time=[0.0], model=model)


def test_write_read_sto_roundtrip_with_nan(tmp_path):
    time = np.linspace(0, 1, 7)
    values = np.random.default_rng(0).normal(size=(7, 3))
    values[2, 1] = np.nan
    write_sto(tmp_path / "e.sto", ["a", "b", "c"], time, values, title="errors")
    back = read_sto(tmp_path / "e.sto")
    assert back.names == ("a", "b", "c") and back.in_degrees is False
    np.testing.assert_allclose(back.values.numpy(), values, atol=1e-8, equal_nan=True)
    with pytest.raises(ValueError, match="shape"):
        write_sto(tmp_path / "f.sto", ["a"], time, values)


@pytest.mark.parametrize(
    "text,match",
    [
        ("a=1\ntime\tx\n0\t1\n", "endheader"),
        ("endheader\nframe\tx\n0\t1\n", "expected 'time'"),
        ("endheader\ntime\tx\n0\t1\t2\n", "line 3 has 3 values"),
        ("endheader\ntime\tx\n0\tabc\n", "non-numeric"),
    ],
)
def test_malformed_tables_raise(tmp_path, text, match):
    p = tmp_path / "bad.mot"
    p.write_text(text)
    with pytest.raises(MotionFileError, match=match) as e:
        read_mot(p)
    assert str(p) in str(e.value)


def test_read_mot_degrees_flag_and_heuristic(tmp_path):
    p = tmp_path / "h.mot"
    p.write_text("Coordinates\ninDegrees=yes\nendheader\ntime\tknee_angle_r\tpelvis_tx\n0\t90\t1.5\n")
    d = read_mot(p)
    assert d.converted == (True, False)
    np.testing.assert_allclose(d.values.numpy(), [[math.pi / 2, 1.5]])
    p.write_text("Coordinates\ninDegrees=no\nendheader\ntime\tknee_angle_r\n0\t1.0\n")
    assert read_mot(p).values.item() == 1.0
    assert read_mot(p, in_degrees=True).values.item() == pytest.approx(math.pi / 180)


def test_reference_mot_with_simm_header_is_degrees():
    path = _shared("opensim-gait2392/subject01_walk1_ik_reference.mot")
    model = load_osim(_shared("opensim-gait2392/subject01_simbody.osim"))
    d = read_mot(path, model=model)
    assert d.in_degrees is None  # the SIMM header has no flag; SIMM motion files are degrees
    ours = read_mot(_shared("opensim-gait2392/opensim46_walk1_ik.mot"), model=model)
    # MANIFEST: the shipped reference and OpenSim 4.6's result agree within 0.12 degrees
    ref_q = d.q_for(model)
    idx = [int(np.argmin(np.abs(d.time.numpy() - t))) for t in ours.time.numpy()]
    diff = (ref_q[idx] - ours.q_for(model)).abs()
    rot = [m is kf.Motion.ROTATIONAL for m in model.topology.coordinate_motion]
    assert float(diff[:, rot].max()) < math.radians(0.13)


# ------------------------------------------------------------------------------ OpenSim oracle
def _osim():
    osim = pytest.importorskip("opensim")
    osim.Logger.removeFileSink()  # no opensim.log in the working directory
    osim.Logger.setLevelString("warn")
    return osim


@pytest.mark.parametrize("rel", ["opensim-gait10dof/subject01.osim", "opensim-gait2392/subject01_simbody.osim"])
def test_opensim_reads_write_mot_and_gives_same_markers(tmp_path, rel):
    osim = _osim()
    mpath = _shared(rel)
    model = load_osim(mpath)
    lo, hi = (t.numpy() for t in model.coordinate_limits())
    rng = np.random.default_rng(3)
    q = torch.from_numpy(lo + (hi - lo) * rng.random((6, len(lo))))
    time = torch.linspace(0.0, 0.5, 6, dtype=torch.float64)
    out = tmp_path / "walk.mot"
    write_mot(out, q=q, time=time, model=model)

    sto = osim.Storage(str(out))
    assert sto.getSize() == 6 and sto.isInDegrees()
    table = osim.TimeSeriesTable(str(out))
    labels = list(table.getColumnLabels())
    assert labels == list(model.coordinate_names)

    om = osim.Model(str(mpath))
    state = om.initSystem()
    cs = om.getCoordinateSet()
    ours = kf.marker_positions(model, q).numpy()
    times = list(table.getIndependentColumn())
    for i in range(6):
        row = table.getRowAtIndex(i)
        for j, name in enumerate(labels):
            c = cs.get(name)
            v = row[j]
            if c.getMotionType() == osim.Coordinate.Rotational:
                v = math.radians(v)
            c.setValue(state, v, False)
        om.realizePosition(state)
        ms = om.getMarkerSet()
        theirs = np.array([[ms.get(n).getLocationInGround(state)[k] for k in range(3)] for n in model.marker_names])
        assert abs(times[i] - float(time[i])) < 1e-8
        assert np.abs(theirs - ours[i]).max() < 1e-7


# ------------------------------------------------------------------------------ marker errors
def _read_trc(path: Path):
    """Minimal TRC reader for the two shared trials (private to this test): names, time (T,),
    xyz (T, M, 3) in metres with NaN for blanks."""
    lines = path.read_text().splitlines()
    keys, vals = lines[1].split("\t"), lines[2].split("\t")
    meta = dict(zip((k.strip() for k in keys), (v.strip() for v in vals)))
    scale = {"mm": 1e-3, "cm": 1e-2, "m": 1.0}[meta["Units"]]
    names = [n.strip() for n in lines[3].split("\t")[2:] if n.strip()]
    rows = []
    for ln in lines[5:]:
        if not ln.strip():
            continue
        parts = ln.split("\t")
        nums = [float(p) if p.strip() else np.nan for p in parts[1 : 2 + 3 * len(names)]]
        nums += [np.nan] * (1 + 3 * len(names) - len(nums))
        rows.append(nums)
    data = np.array(rows)
    return names, data[:, 0], data[:, 1:].reshape(len(rows), len(names), 3) * scale


@pytest.mark.parametrize(
    "folder,osim,trc,setup,mot,errors",
    [
        (
            "opensim-gait2392",
            "subject01_simbody.osim",
            "subject01_walk1.trc",
            "subject01_Setup_IK.xml",
            "opensim46_walk1_ik.mot",
            "opensim46_walk1_ik_marker_errors.sto",
        ),
        (
            "opensim-gait10dof",
            "subject01.osim",
            "subject01_walk.trc",
            "walk_Setup_IK.xml",
            "opensim46_walk_ik.mot",
            "opensim46_walk_ik_marker_errors.sto",
        ),
    ],
)
def test_opensim_ik_marker_errors_reproduced(folder, osim, trc, setup, mot, errors):
    model = load_osim(_shared(f"{folder}/{osim}"))
    ik = load_ik_setup(_shared(f"{folder}/{setup}"))
    names, ttrc, xyz = _read_trc(_shared(f"{folder}/{trc}"))
    motion = read_mot(_shared(f"{folder}/{mot}"), model=model)
    ref = read_sto(_shared(f"{folder}/{errors}"))
    used = [n for n in model.marker_names if n in ik.marker_weights and n in names]
    sub = model.with_markers(used)
    x_model = kf.marker_positions(sub, motion.q_for(model)).numpy()  # (T, M, 3)
    frame = [int(np.argmin(np.abs(ttrc - t))) for t in motion.time.numpy()]
    assert np.abs(ttrc[frame] - motion.time.numpy()).max() < 1e-6
    x_trc = xyz[frame][:, [names.index(n) for n in used]]
    d2 = ((x_model - x_trc) ** 2).sum(-1)
    valid = np.isfinite(d2)
    total = np.where(valid, d2, 0.0).sum(-1)
    rms = np.sqrt(total / valid.sum(-1))
    mx = np.sqrt(np.where(valid, d2, -1.0).max(-1))
    np.testing.assert_allclose(ref.time.numpy(), motion.time.numpy(), atol=1e-8)
    np.testing.assert_allclose(rms, ref.column("marker_error_RMS").numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(mx, ref.column("marker_error_max").numpy(), atol=1e-5, rtol=0)
    # total squared error in m^2: 0.01 mm on the RMS scale
    np.testing.assert_allclose(
        np.sqrt(total), np.sqrt(ref.column("total_squared_error").numpy()), atol=1e-5, rtol=0
    )
