"""MarkerTrial operations: resample, gap-aware zero-phase filter, gap summary, renaming and
marker matching, lab-frame reorientation and its suggestion, conversion."""
from __future__ import annotations

import functools
import itertools
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kinfunc as kf
from kinfunc.filters import butter_lowpass_sos, filtfilt, padlen_for
from kinfunc.io import DataFileWarning
from kinfunc.markersets import landmark_key, match
from kinfunc.trial import axes_rotation

from .shared import data


def make(xyz, rate=100.0, names=None, t0=0.0):
    xyz = torch.as_tensor(np.asarray(xyz, dtype=np.float64))
    T, M, _ = xyz.shape
    return kf.MarkerTrial(
        names=tuple(names or [f"m{k}" for k in range(M)]), xyz=xyz, rate=rate,
        time=t0 + torch.arange(T, dtype=torch.float64) / rate,
    )


# --------------------------------------------------------------------------- gaps / names
def test_gap_summary():
    x = np.zeros((10, 2, 3))
    x[[1, 2, 3, 7], 0] = np.nan
    tr = make(x, names=["A", "B"])
    g = tr.gap_summary()
    assert g["A"] == (4, 3, 2) and g["B"] == (0, 0, 0)
    assert g["A"].longest == 3


def test_renamed_and_errors():
    tr = make(np.zeros((2, 3, 3)), names=["a", "b", "c"])
    assert tr.renamed({"a": "x", "c": "z"}).names == ("x", "b", "z")
    with pytest.raises(KeyError, match="unknown marker"):
        tr.renamed({"q": "x"})
    with pytest.raises(ValueError, match="several markers"):
        tr.renamed({"a": "b"})


def test_landmark_keys_across_protocols():
    assert landmark_key("Bob:LFWT") == landmark_key("LASI") == landmark_key("L.ASIS") == ("L", "ASIS")
    assert landmark_key("RSHN") == landmark_key("RTIB") == ("R", "TIBIA")
    assert landmark_key("LHEE") == landmark_key("LCAL") == landmark_key("L.Heel") == ("L", "HEEL")
    assert landmark_key("RBWT") == landmark_key("RPSI") == ("R", "PSIS")
    assert landmark_key("V.Sacral") == landmark_key("SACR") == (None, "SACRUM")
    assert landmark_key("R.Knee.Lat") == landmark_key("RKNE") == ("R", "KNEE")
    assert landmark_key("R.Thigh.Upper") is None and landmark_key("RTH1") is None


@pytest.mark.parametrize("model_set, trial_set", list(itertools.permutations(["cmu", "pig", "opensim"], 2)))
def test_match_builtin_marker_sets(model_set, trial_set):
    model = kf.models.lower_body(marker_set=model_set).marker_names
    trial = list(kf.models.lower_body(marker_set=trial_set).marker_names) + ["C7", "Bob:T10"]
    m = match(model, trial)
    # every name is either paired or reported, on both sides, and pairs are one-to-one
    assert set(m.pairs) | set(m.unmatched_model) == set(model)
    assert set(m.pairs.values()) | set(m.unmatched_trial) == set(trial)
    assert len(set(m.pairs.values())) == len(m.pairs)
    for a, b in m.pairs.items():
        assert a == b or landmark_key(a) == landmark_key(b)
    pelvis = {"cmu": ("RFWT", "RBWT"), "pig": ("RASI", "RPSI"), "opensim": ("R.ASIS", None)}
    ma, mp = pelvis[model_set]
    ta, tp = pelvis[trial_set]
    assert m.pairs[ma] == ta
    if mp and tp:
        assert m.pairs[mp] == tp
    assert "C7" in m.unmatched_trial
    renamed = make(np.zeros((1, len(trial), 3)), names=trial).renamed(m.rename_map)
    assert set(m.pairs) <= set(renamed.names)


def test_match_exact_first_and_ambiguity():
    m = match(["LASI", "RASI"], ["LASI", "L.ASIS", "RFWT", "R.ASIS"])
    assert m.pairs["LASI"] == "LASI" and m.how["LASI"] == "exact"
    assert "RASI" in m.ambiguous and "RASI" in m.unmatched_model  # two candidates: not guessed
    assert set(m.unmatched_trial) == {"L.ASIS", "RFWT", "R.ASIS"}
    m2 = match(["lasi"], ["Subj:LASI"])
    assert m2.pairs == {"lasi": "Subj:LASI"} and m2.how["lasi"] == "normalised"


# --------------------------------------------------------------------------- resample
def test_resample_matches_numpy_interp_and_keeps_gaps():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 2, 3)).cumsum(0)
    x[20:23, 1] = np.nan
    tr = make(x, rate=100.0, t0=0.37)
    up = tr.resample(250.0)
    assert up.rate == 250.0 and up.n_frames == 123
    t, tn = tr.time.numpy(), up.time.numpy()
    np.testing.assert_allclose(np.diff(tn), 1 / 250.0)
    ref0 = np.stack([np.interp(tn, t, x[:, 0, k]) for k in range(3)], -1)
    np.testing.assert_allclose(up.xyz[:, 0].numpy(), ref0, rtol=1e-12, atol=1e-12)
    # marker 1: interpolated where both neighbours are present, missing otherwise
    gap = (tn > t[19] + 1e-12) & (tn < t[23] - 1e-12)
    assert torch.isnan(up.xyz[gap, 1]).all() and not torch.isnan(up.xyz[~gap, 1]).any()
    ok = ~gap
    ref1 = np.stack([np.interp(tn[ok], t[~np.isnan(x[:, 1, 0])], x[~np.isnan(x[:, 1, 0]), 1, k]) for k in range(3)], -1)
    np.testing.assert_allclose(up.xyz[ok, 1].numpy(), ref1, rtol=1e-12, atol=1e-12)
    # down again onto the original grid: the original samples (gaps included)
    # up by an integer factor and back: the original samples, gaps included
    back = tr.resample(200.0).resample(100.0)
    torch.testing.assert_close(back.xyz, tr.xyz, equal_nan=True, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(back.time, tr.time)
    same = tr.resample(100.0)
    torch.testing.assert_close(same.xyz, tr.xyz, equal_nan=True, rtol=0, atol=0)


# --------------------------------------------------------------------------- filtering
def test_butterworth_design_matches_scipy():
    sig = pytest.importorskip("scipy.signal")
    for order in (1, 2, 3, 4, 6):
        sos = butter_lowpass_sos(order, 6.0, 100.0)
        ref = sig.butter(order, 6.0, fs=100.0, output="sos")
        _, h = sig.sosfreqz(sos, worN=512, fs=100.0)
        _, h2 = sig.sosfreqz(ref, worN=512, fs=100.0)
        np.testing.assert_allclose(h, h2, atol=1e-12)
        assert padlen_for(sos) == 3 * (2 * len(ref) + 1 - min((ref[:, 2] == 0).sum(), (ref[:, 5] == 0).sum()))
    with pytest.raises(ValueError, match="Nyquist"):
        butter_lowpass_sos(4, 60.0, 100.0)


def test_filtered_equals_scipy_per_run_and_respects_gaps():
    sig = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(1)
    T = 300
    x = rng.normal(size=(T, 3, 3)).cumsum(0) * 0.01
    x[100:110, 1] = np.nan  # gap splits marker 1 into two runs
    x[290:295, 2] = np.nan  # leaves a 5-sample run at the end (too short to filter)
    tr = make(x, rate=100.0)
    with pytest.warns(DataFileWarning, match="left unfiltered"):
        f = tr.filtered(6.0, order=4)
    ref = sig.butter(4, 6.0, fs=100.0, output="sos")
    y = f.xyz.numpy()
    np.testing.assert_allclose(y[:, 0], sig.sosfiltfilt(ref, x[:, 0], axis=0), atol=1e-12)
    np.testing.assert_allclose(y[:100, 1], sig.sosfiltfilt(ref, x[:100, 1], axis=0), atol=1e-12)
    np.testing.assert_allclose(y[110:, 1], sig.sosfiltfilt(ref, x[110:, 1], axis=0), atol=1e-12)
    np.testing.assert_allclose(y[:290, 2], sig.sosfiltfilt(ref, x[:290, 2], axis=0), atol=1e-12)
    np.testing.assert_array_equal(y[295:, 2], x[295:, 2])  # short run untouched, reported
    assert f.meta["unfiltered_runs"] == [("m2", 295, 299)]
    assert torch.equal(torch.isnan(f.xyz), torch.isnan(tr.xyz))


def test_filter_properties_without_scipy():
    t = np.arange(400) / 100.0
    const = make(np.full((400, 1, 3), 1.234))
    torch.testing.assert_close(const.filtered(6.0).xyz, const.xyz, rtol=0, atol=1e-12)
    slow = np.sin(2 * np.pi * 0.5 * t)  # far below the cutoff: no lag, no attenuation
    fast = np.sin(2 * np.pi * 30.0 * t)  # far above: removed
    x = np.stack([slow, fast, slow + fast], -1)[:, None, :]
    y = make(x).filtered(6.0, order=4).xyz.numpy()[:, 0]
    mid = slice(50, 350)
    np.testing.assert_allclose(y[mid, 0], slow[mid], atol=1e-4)
    assert np.abs(y[mid, 1]).max() < 1e-3
    np.testing.assert_allclose(y[mid, 2], slow[mid], atol=2e-3)
    # -6 dB at the cutoff after the two passes (a long sine at exactly the cutoff)
    tt = np.arange(4000) / 100.0
    c = np.sin(2 * np.pi * 6.0 * tt)
    yc = filtfilt(butter_lowpass_sos(4, 6.0, 100.0), c[None])[0]
    amp = np.abs(yc[1000:3000]).max()
    assert amp == pytest.approx(0.5, abs=5e-3)


# --------------------------------------------------------------------------- frames
PROPER = [(u, f) for u in ("+x", "-x", "+y", "-y", "+z", "-z") for f in ("+x", "-x", "+y", "-y", "+z", "-z") if u[1] != f[1]]


@pytest.mark.parametrize("up, forward", PROPER)
def test_axes_rotation_is_proper(up, forward):
    R = axes_rotation(up=up, forward=forward)
    torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=torch.float64))
    assert float(torch.linalg.det(R)) == pytest.approx(1.0)
    # the lab up axis maps to model +Y, lab forward to model +X
    u = torch.zeros(3, dtype=torch.float64)
    u["xyz".index(up[1])] = 1.0 if up[0] == "+" else -1.0
    f = torch.zeros(3, dtype=torch.float64)
    f["xyz".index(forward[1])] = 1.0 if forward[0] == "+" else -1.0
    torch.testing.assert_close(R @ u, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(R @ f, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))


def test_reoriented_identity_composition_and_errors():
    tr = make(np.random.default_rng(2).normal(size=(4, 2, 3)))
    torch.testing.assert_close(tr.reoriented(up="y", forward="+x").xyz, tr.xyz)
    z = tr.reoriented(up="z", forward="+x")  # Z-up lab: lab (x, y, z) -> model (x, z, -y)
    torch.testing.assert_close(z.xyz, torch.stack([tr.xyz[..., 0], tr.xyz[..., 2], -tr.xyz[..., 1]], -1))
    zz = z.reoriented(up="-z", forward="+y")
    R = torch.tensor(zz.meta["lab_to_model"], dtype=torch.float64)
    torch.testing.assert_close(zz.xyz, tr.xyz @ R.T)
    with pytest.raises(ValueError, match="different lab axes"):
        tr.reoriented(up="z", forward="-z")
    with pytest.raises(ValueError, match="optional sign"):
        tr.reoriented(up="up")


@functools.lru_cache(maxsize=None)
def _walk_model_frame():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataFileWarning)
        return kf.io.load_trc(data("opensim-gait2392/subject01_walk1.trc"))  # Y up, X forward


@settings(max_examples=24, deadline=None)
@given(st.sampled_from(PROPER))
def test_suggest_orientation_recovers_any_lab_frame(spec):
    up, forward = spec
    model_frame = _walk_model_frame()
    R = axes_rotation(up=up, forward=forward)  # model <- lab, so lab = R^T model
    lab = kf.MarkerTrial(names=model_frame.names, xyz=model_frame.xyz @ R, rate=model_frame.rate, time=model_frame.time)
    guess = lab.suggest_orientation()
    assert dict(guess) == {"up": up, "forward": forward}, guess.reason
    assert guess.confident and "pelvis" in guess.reason
    torch.testing.assert_close(lab.reoriented(**guess).xyz, model_frame.xyz)


@pytest.mark.parametrize(
    "rel, expected",
    [
        ("c3d/opensim-core/walking2.c3d", {"up": "+z", "forward": "+x"}),
        ("c3d/btk/PiG_Motion3_FF.c3d", {"up": "+z", "forward": "+y"}),
        ("c3d/btk/HelenHayes_Gait.c3d", {"up": "+z", "forward": "-x"}),
        ("trc/opensim-core/dataWithNaNsWithSpaces.trc", {"up": "+y", "forward": "+x"}),
    ],
)
def test_suggest_orientation_on_real_trials(rel, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataFileWarning)
        tr = kf.io.load_markers(data(rel))
    g = tr.suggest_orientation()
    assert dict(g) == expected, g.reason
    assert tr.xyz is tr.xyz and "lab_to_model" not in tr.meta  # nothing applied


# --------------------------------------------------------------------------- convert
def test_convert_c3d_to_trc_and_trc_to_trc(tmp_path):
    pytest.importorskip("ezc3d")
    src = data("c3d/btk/PiG_Calibration3_FF.c3d")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataFileWarning)
        tr = kf.io.convert(src, tmp_path / "a.trc")
        back = kf.io.load_trc(tmp_path / "a.trc")
        kf.io.convert(tmp_path / "a.trc", tmp_path / "b.trc")
        again = kf.io.load_trc(tmp_path / "b.trc")
        kf.io.convert(tmp_path / "a.trc", tmp_path / "c.c3d")
        c3 = kf.io.load_c3d(tmp_path / "c.c3d")
    assert back.names == tr.names and back.units == "mm" and back.meta["first_frame"] == 604
    torch.testing.assert_close(back.time, tr.time)
    torch.testing.assert_close(back.xyz, tr.xyz, equal_nan=True, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(again.xyz, back.xyz, equal_nan=True, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(c3.xyz, tr.xyz, equal_nan=True, rtol=1e-6, atol=1e-9)
    assert c3.meta["first_frame"] == 604
    with pytest.raises(ValueError, match="unknown marker file type"):
        kf.io.convert(tmp_path / "a.txt", tmp_path / "b.trc")
