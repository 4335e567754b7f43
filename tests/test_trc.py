"""TRC reader/writer: every shared TRC loads (checked against OpenSim's own reader where it
reads the file), quirks are handled or raise DataFileError, and write -> load round-trips."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kinfunc as kf
from kinfunc.io import DataFileError, DataFileWarning

from .shared import data


def load_quiet(p, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataFileWarning)
        return kf.io.load_trc(p, **kw)


# file -> (frames, markers, units, rate, missing samples (marker-frames))
EXPECTED = {
    "opensim-gait2392/subject01_walk1.trc": (151, 41, "mm", 60.0, 0),
    "opensim-gait2392/subject01_static.trc": (300, 49, "mm", 60.0, 0),
    "opensim-gait10dof/subject01_walk.trc": (151, 41, "mm", 60.0, 0),
    "opensim-gait10dof/subject01_static.trc": (300, 49, "mm", 60.0, 0),
    "c3d/opensim-core/walking2_expected_markers.trc": (126, 44, "mm", 250.0, 2809),
    "trc/btk/MOTEK/T.trc": (89, 41, "mm", 30.0, 0),
    "trc/opensim-core/dataWithBlanksForMissingMarkers.trc": (464, 40, "mm", 250.0, 15005),
    "trc/opensim-core/dataWithEformat.trc": (5, 14, "m", 119.88012, 0),
    "trc/opensim-core/dataWithNaNsOfDifferentCases.trc": (5, 14, "mm", 250.0, 5),
    "trc/opensim-core/dataWithNaNsWithSpaces.trc": (427, 42, "mm", 100.0, 22),
    "trc/opensim-core/gait10dof18musc_walk_CRLF_line_ending.trc": (10, 41, "mm", 60.0, 0),
}


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_shared_trc_loads(rel):
    T, M, units, rate, missing = EXPECTED[rel]
    tr = load_quiet(data(rel))
    assert tr.xyz.shape == (T, M, 3) and tr.xyz.dtype == torch.float64
    assert tr.units == units and tr.rate == pytest.approx(rate)
    nan = torch.isnan(tr.xyz)
    assert bool((nan.any(-1) == nan.all(-1)).all())  # a sample is missing as a whole
    assert int(nan[..., 0].sum()) == missing
    assert len(set(tr.names)) == M
    # metres: body markers are within a few metres of the origin, not thousands
    assert float(tr.xyz.nan_to_num(0).abs().max()) < 20.0
    assert torch.all(torch.diff(tr.time) > 0)


def _opensim():
    osim = pytest.importorskip("opensim")
    try:  # keep OpenSim from writing opensim.log into the working tree
        osim.Logger.removeFileSink()
    except AttributeError:
        pass
    return osim


def _opensim_read(p: Path):
    osim = _opensim()
    tab = osim.TimeSeriesTableVec3(str(p))
    labels = list(tab.getColumnLabels())
    flat = tab.flatten()
    a = flat.getMatrix().to_numpy().reshape(tab.getNumRows(), len(labels), 3)
    return labels, a, np.asarray(flat.getIndependentColumn()), tab.getTableMetaDataString("Units")


@pytest.mark.parametrize(
    "rel",
    [
        "c3d/opensim-core/walking2_expected_markers.trc",
        "trc/opensim-core/dataWithBlanksForMissingMarkers.trc",
        "trc/opensim-core/dataWithNaNsWithSpaces.trc",
        "trc/opensim-core/dataWithNaNsOfDifferentCases.trc",
        "trc/opensim-core/dataWithEformat.trc",
        "trc/opensim-core/gait10dof18musc_walk_CRLF_line_ending.trc",
        "trc/btk/MOTEK/T.trc",
    ],
)
def test_matches_opensim_reader(rel):
    p = data(rel)
    labels, a, t, units = _opensim_read(p)
    tr = load_quiet(p)
    assert list(tr.names) == labels
    x = tr.xyz.numpy() / {"mm": 1e-3, "m": 1.0}[units]
    np.testing.assert_array_equal(np.isnan(x), np.isnan(a))
    np.testing.assert_allclose(x, a, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(tr.time.numpy(), t, atol=1e-12)


def test_gait_trc_label_mismatch_reported_and_selectable():
    p = data("trc/btk/Gait.trc")
    with pytest.warns(DataFileWarning) as rec:
        tr = kf.io.load_trc(p)
    msgs = [str(w.message) for w in rec]
    assert any("NumMarkers=66 but line 4 has 33 labels" in m for m in msgs)
    assert any("72 data column group(s) beyond the 33 labels" in m for m in msgs)
    assert tr.n_frames == 487 and tr.names[:2] == ("R.Shoulder", "R.Offset")
    assert tr.names[33] == "unlabeled_34" and tr.n_markers == 105
    assert any("unlabeled_34" in w for w in tr.meta["warnings"])
    dropped = load_quiet(p, unlabeled="drop")
    assert dropped.n_markers == 33
    torch.testing.assert_close(dropped.xyz, tr.xyz[:, :33], equal_nan=True)
    with pytest.raises(DataFileError, match="only 33 are labelled"):
        load_quiet(p, unlabeled="error")


@pytest.mark.parametrize(
    "rel, match",
    [("trc/btk/Empty.trc", "Empty.trc: empty file"), ("trc/btk/Truncated.trc", "Truncated.trc: unexpected end of file at line 3")],
)
def test_empty_and_truncated_raise(rel, match):
    with pytest.raises(DataFileError, match=match):
        kf.io.load_trc(data(rel))


HDR = (
    "PathFileType\t4\t(X/Y/Z)\tx.trc\n"
    "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames\n"
    "100\t100\t{T}\t2\t{u}\t100\t1\t{T}\n"
    "Frame#\tTime\tA\t\t\tB\t\t\n"
    "\t\tX1\tY1\tZ1\tX2\tY2\tZ2\n\n"
)


def _write(tmp_path, body, T=2, u="mm", name="x.trc"):
    p = tmp_path / name
    p.write_text(HDR.format(T=T, u=u) + body)
    return p


def test_units_cm_and_short_rows_partial_samples(tmp_path):
    p = _write(tmp_path, "1\t0\t1\t2\t3\t4\t5\t6\n2\t0.01\t1\t2\t3\n", u="cm")
    tr = kf.io.load_trc(p)
    assert tr.units == "cm"
    np.testing.assert_allclose(tr.xyz[0].numpy(), [[0.01, 0.02, 0.03], [0.04, 0.05, 0.06]])
    assert torch.isnan(tr.xyz[1, 1]).all() and tr.meta["short_rows"] == 1
    p2 = _write(tmp_path, "1\t0\t1\t\t3\t4\t5\t6\n2\t0.01\t1\t2\t3\t4\t5\t6\n", name="y.trc")
    with pytest.warns(DataFileWarning, match="only some of X/Y/Z"):
        tr2 = kf.io.load_trc(p2)
    assert torch.isnan(tr2.xyz[0, 0]).all() and not torch.isnan(tr2.xyz[0, 1]).any()


def test_bad_fields_raise_naming_line_and_marker(tmp_path):
    p = _write(tmp_path, "1\t0\t1\t2\t3\t4\t5\t6\n2\t0.01\t1\t2\t3\t4\tfoo\t6\n")
    with pytest.raises(DataFileError, match=r"x.trc: line 8, column 7 \(marker 'B', Y\): 'foo'"):
        kf.io.load_trc(p)
    with pytest.raises(DataFileError, match="Units = 'furlong'"):
        kf.io.load_trc(_write(tmp_path, "1\t0\t1\t2\t3\t4\t5\t6\n2\t0.01\t1\t2\t3\t4\t5\t6\n", u="furlong"))
    tr = load_quiet(_write(tmp_path, "1\t0\t1\t2\t3\t4\t5\t6\n2\t0.01\t1\t2\t3\t4\t5\t6\n", u="furlong"), units="m")
    assert tr.units == "m" and float(tr.xyz[0, 0, 0]) == 1.0
    with pytest.raises(DataFileError, match="NumFrames=5 but the file has 2 data rows"):
        kf.io.load_trc(_write(tmp_path, "1\t0\t1\t2\t3\t4\t5\t6\n2\t0.01\t1\t2\t3\t4\t5\t6\n", T=5))
    tr = load_quiet(_write(tmp_path, "1\t0\t1\t2\t3\t4\t5\t6\n2\t0.01\t1\t2\t3\t4\t5\t6\n", T=5), strict=False)
    assert tr.n_frames == 2
    z = tmp_path / "z.trc"
    z.write_text("hello\nworld\n")
    with pytest.raises(DataFileError, match="z.trc: line 1 is 'hello', not a TRC header"):
        kf.io.load_trc(z)


def test_exotic_nan_spellings(tmp_path):
    p = _write(tmp_path, "1\t0\t-nan(ind)\t-nan(ind)\t-nan(ind)\t4\t5\t6\n2\t0.01\t1.#QNAN\t1.#QNAN\t1.#QNAN\t 4 \t5\t6e0\n")
    tr = kf.io.load_trc(p)
    assert torch.isnan(tr.xyz[:, 0]).all()
    np.testing.assert_allclose(tr.xyz[:, 1].numpy(), [[0.004, 0.005, 0.006]] * 2)


def test_time_rounding_recovered_from_frames(tmp_path):
    body = "".join(f"{k + 1}\t{round(k / 3000, 3):.3f}\t1\t2\t3\t4\t5\t6\n" for k in range(6))
    p = tmp_path / "r.trc"
    p.write_text(HDR.format(T=6, u="mm").replace("100\t100\t6", "3000\t3000\t6") + body)
    with pytest.warns(DataFileWarning, match="times recomputed from Frame#"):
        tr = kf.io.load_trc(p)
    torch.testing.assert_close(tr.time, torch.arange(6, dtype=torch.float64) / 3000)
    p.write_text(HDR.format(T=2, u="mm") + "1\t0.01\t1\t2\t3\t4\t5\t6\n1\t0.0\t1\t2\t3\t4\t5\t6\n")
    with pytest.raises(DataFileError, match="line 8: time 0.0 does not increase"):
        kf.io.load_trc(p)


def test_duplicate_labels_made_unique(tmp_path):
    p = tmp_path / "d.trc"
    p.write_text(HDR.format(T=1, u="m").replace("\tA\t\t\tB", "\tA\t\t\tA") + "1\t0\t1\t2\t3\t4\t5\t6\n")
    with pytest.warns(DataFileWarning, match="duplicate marker labels"):
        tr = kf.io.load_trc(p)
    assert tr.names == ("A", "A_2") and tr.meta["renamed"] == {"A_2": "A"}


def _random_trial(draw_names, xyz, rate, units):
    T = xyz.shape[0]
    return kf.MarkerTrial(
        names=tuple(draw_names), xyz=torch.from_numpy(xyz), rate=rate,
        time=torch.arange(T, dtype=torch.float64) / rate, units=units,
    )


names_st = st.lists(
    st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="._:-"), min_size=1, max_size=8),
    min_size=1, max_size=6, unique=True,
)


@settings(max_examples=25, deadline=None)
@given(
    names=names_st,
    T=st.integers(1, 12),
    rate=st.sampled_from([30.0, 60.0, 100.0, 119.88012, 250.0]),
    units=st.sampled_from(["mm", "cm", "m"]),
    seed=st.integers(0, 2**32 - 1),
    blank=st.booleans(),
)
def test_write_load_roundtrip(tmp_path_factory, names, T, rate, units, seed, blank):
    rng = np.random.default_rng(seed)
    xyz = rng.normal(scale=1.0, size=(T, len(names), 3))
    gaps = rng.random((T, len(names))) < 0.2
    xyz[gaps] = np.nan
    tr = _random_trial(names, xyz, rate, units)
    p = tmp_path_factory.mktemp("rt") / "t.trc"
    kf.io.write_trc(p, tr, missing="" if blank else "NaN", float_format="%.17g")
    back = load_quiet(p)
    assert back.names == tr.names and back.units == units and back.rate == pytest.approx(rate, rel=1e-9)
    torch.testing.assert_close(back.xyz, tr.xyz, equal_nan=True, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(back.time, tr.time, rtol=1e-9, atol=1e-12)


def test_written_file_read_by_opensim(tmp_path):
    osim = _opensim()
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(7, 3, 3))
    xyz[2, 1] = np.nan
    tr = _random_trial(["R.ASIS", "LASI", "V.Sacral"], xyz, 100.0, "mm")
    p = kf.io.write_trc(tmp_path / "o.trc", tr)
    labels, a, t, units = _opensim_read(p)
    assert labels == ["R.ASIS", "LASI", "V.Sacral"] and units == "mm"
    np.testing.assert_allclose(a / 1000.0, xyz, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(t, tr.time.numpy(), atol=1e-12)
    md = osim.MarkerData(str(p))
    assert md.getNumFrames() == 7 and md.getMarkerNames().getSize() == 3


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), mode=st.sampled_from(["flip", "cut", "dup", "del"]))
def test_mangled_text_loads_or_raises_datafileerror(tmp_path_factory, seed, n, mode):
    rng = np.random.default_rng(seed)
    src = (HDR.format(T=3, u="mm") + "1\t0\t1\t2\t3\t4\t5\t6\n2\t0.01\t1\t2\t3\t4\t5\t6\n3\t0.02\t1\t\t3\t4\t5\t6\n").encode()
    b = bytearray(src)
    for _ in range(n):
        i = int(rng.integers(len(b)))
        if mode == "flip":
            b[i] = int(rng.choice(list(b"\t\n\r -.eE0123456789xNa\x00\xff")))
        elif mode == "cut":
            b = b[:i]
            break
        elif mode == "dup":
            b[i:i] = b[i : i + int(rng.integers(1, 20))]
        else:
            del b[i : i + int(rng.integers(1, 20))]
    p = tmp_path_factory.mktemp("m") / "m.trc"
    p.write_bytes(bytes(b))
    try:
        tr = load_quiet(p)
    except DataFileError:
        return
    assert tr.xyz.shape[1:] == (tr.n_markers, 3) and len(set(tr.names)) == tr.n_markers
    assert not torch.isinf(tr.xyz).any()
