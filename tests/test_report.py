"""Reports (PNG + HTML), the JSON model format and the demo's normative-gait generator."""
from __future__ import annotations

import builtins
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kinfunc as kf
from kinfunc import report
from kinfunc.demo import GAIT_KEYPOINTS, demo_subject, demo_trial, normative_gait, periodic_curve
from kinfunc.ik.synthetic import gait_motion, perturbed_model, synthetic_trial

f64 = torch.float64


@pytest.fixture(scope="module")
def small_result():
    model = kf.models.lower_body("cmu", dtype=f64)
    q = gait_motion(model, 12)
    tr = synthetic_trial(model, q, noise=0.002, gaps=0.05, seed=4)
    return kf.ik.solve(model, tr, fit=("pose",)), tr, q


# ----------------------------------------------------------------------------- report
def test_report_png_and_html(small_result, tmp_path):
    pytest.importorskip("matplotlib")
    res, tr, q = small_result
    ref = tmp_path / "truth.mot"
    kf.io.write_mot(ref, q=q, time=tr.time, model=res.model)
    files = report.make_report(res, tmp_path / "r", trial=tr, reference=ref)
    png = files["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    img = mpimg.imread(files["png"])
    assert img.shape[0] > 800 and img.shape[1] > 800
    assert img[..., :3].std() > 0.05  # not a blank canvas
    page = files["html"].read_text()
    assert 'src="report.png"' in page and all(n in page for n in res.marker_names)
    assert "truth.mot" in page


def test_report_html_embeds_the_viewer(small_result, tmp_path):
    """report.html carries the 3-D viewer inline (kinfunc.viewer; its browser tests: test_viewer.py)."""
    pytest.importorskip("matplotlib")
    res, tr, q = small_result
    page = report.make_report(res, tmp_path / "r", trial=tr)["html"].read_text(encoding="utf-8")
    assert "<h2>Motion</h2>" in page and page.count('id="kfv-data"') == 1 and "window.kfViewer" in page
    data = json.loads(page.split('id="kfv-data">', 1)[1].split("</script>", 1)[0])
    assert data["n_shown"] == data["n_total"] == q.shape[0] and data["markers"] == list(res.marker_names)
    assert data["has_measured"] and "http://" not in page and "https://" not in page


def test_report_without_matplotlib_is_skipped(small_result, tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib here")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    assert report.make_report(small_result[0], tmp_path / "r") is None
    err = capsys.readouterr().err
    assert "matplotlib not installed" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "report.png").exists()


# ----------------------------------------------------------------------------- JSON model
def _assert_models_equal(a: kf.Model, b: kf.Model) -> None:
    assert a.topology == b.topology
    for name in ("parent_location", "parent_orientation", "child_location", "child_orientation", "axes",
                 "marker_offsets", "body_scales", "global_scale"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for ga, gb in zip(a.slot_params + a.coupler_params, b.slot_params + b.coupler_params):
        for x, y in zip(ga, gb):
            assert torch.equal(x, y)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), sigma=st.floats(0.0, 0.05), g=st.floats(0.5, 2.0))
def test_model_json_round_trip_bit_exact(tmp_path_factory, seed, sigma, g):
    base = kf.models.lower_body("opensim", dtype=f64)
    m = perturbed_model(base, {"femur_r": 1.0 + sigma, "pelvis": 1.0 - sigma}, offset_sigma=sigma, seed=seed)
    m = m.replace(global_scale=torch.tensor(g, dtype=f64))
    p = tmp_path_factory.mktemp("j") / "m.json"
    kf.io.save_model(m, p)
    _assert_models_equal(m, kf.io.load_model(p))


def test_model_json_round_trip_osim_with_splines_couplers(shared_data, tmp_path):
    m = kf.io.load_osim(shared_data / "opensim-gait2392" / "subject01_simbody.osim")
    assert m.topology.dependent_names or m.topology.slot_groups  # splines (knee), locked mtp
    p = kf.io.save_model(m, tmp_path / "s.json")
    back = kf.io.load_model(p, dtype=torch.float32)
    assert back.dtype == torch.float32 and back.topology == m.topology
    back64 = kf.io.load_model(p)
    _assert_models_equal(m, back64)
    q = m.default_q() + 0.3 * torch.randn(4, len(m.coordinate_names), dtype=f64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(kf.marker_positions(back64, q), kf.marker_positions(m, q), rtol=0, atol=0)


@pytest.mark.parametrize("text, needle", [
    ("not json at all", "not a JSON model file"),
    ('{"format": "x"}', "not a kinfunc model file"),
    ('{"format": "kinfunc-model", "version": 99}', "version 99"),
])
def test_model_json_bad_files_name_file_and_fix(tmp_path, text, needle):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(kf.io.ModelFileError, match=needle) as e:
        kf.io.load_model(p)
    assert "bad.json" in str(e.value) and isinstance(e.value, ValueError)


def test_model_json_truncated_leaf_is_named(tmp_path):
    m = kf.models.lower_body("cmu", dtype=f64)
    p = kf.io.save_model(m, tmp_path / "m.json")
    doc = json.loads(p.read_text())
    doc["leaves"]["marker_offsets"] = doc["leaves"]["marker_offsets"][:-1]
    p.write_text(json.dumps(doc))
    with pytest.raises(kf.io.ModelFileError, match="marker_offsets"):
        kf.io.load_model(p)


# ----------------------------------------------------------------------------- demo gait
def test_periodic_curve_passes_near_keypoints_and_is_periodic():
    for name, kp in GAIT_KEYPOINTS.items():
        x = np.array([k[0] for k in kp]) / 100
        y = np.array([k[1] for k in kp])
        got = periodic_curve(kp, x)
        assert np.abs(got - y).max() < 3.0, name
        ph = np.linspace(0, 1, 50)
        np.testing.assert_allclose(periodic_curve(kp, ph), periodic_curve(kp, ph + 1), atol=1e-9)


def test_normative_gait_has_textbook_features():
    model = kf.models.lower_body("cmu", dtype=f64)
    rate, stride = 100.0, 1.1
    q = normative_gait(model, strides=2, rate=rate, stride_time=stride)
    assert q.shape == (220, 18)
    deg = lambda n: q[:110, model.coordinate_names.index(n)].numpy() * 180 / math.pi  # noqa: E731
    hip, knee, ankle = deg("hip_flexion_r"), deg("knee_angle_r"), deg("ankle_angle_r")
    pct = np.arange(110) / 110 * 100
    assert 27 < hip[0] < 33 and -13 < hip.min() < -7 and 45 < pct[hip.argmin()] < 58
    assert -66 < knee.min() < -59 and 65 < pct[knee.argmin()] < 78  # swing peak (flexion negative)
    stance = knee[(pct > 5) & (pct < 25)]
    assert -21 < stance.min() < -14  # loading-response bump
    assert -21 < ankle.min() < -14 and 55 < pct[ankle.argmin()] < 68  # plantarflexion at toe-off
    # left = right half a stride later; second stride = first
    r, l_ = model.coordinate_names.index("knee_angle_r"), model.coordinate_names.index("knee_angle_l")
    torch.testing.assert_close(q[55:165, l_], q[0:110, r], rtol=0, atol=1e-9)
    torch.testing.assert_close(q[110:, 6:], q[:110, 6:], rtol=0, atol=1e-9)
    # walks forward at the set speed
    tx = q[:, model.coordinate_names.index("pelvis_tx")]
    assert float(tx[-1] - tx[0]) == pytest.approx(1.3 * 219 / rate)


def test_demo_trial_artefacts_are_soft_tissue_like():
    model = kf.models.lower_body("cmu", dtype=f64)
    subj = demo_subject(model)
    q = normative_gait(model, rate=100)
    clean = kf.marker_positions(subj, q)
    tr = demo_trial(subj, q, rate=100, white=0.0, soft_tissue=0.003, n_gaps=4, seed=5)
    d = tr.xyz - clean
    ok = torch.isfinite(d).all(-1)
    assert 0 < int((~ok).sum()) <= 4 * 25 and int((~ok).any(0).sum()) <= 4
    rms = float(d[ok].pow(2).mean().sqrt())
    assert 0.002 < rms < 0.006  # a few mm
    # slow: successive-frame differences are much smaller than the displacement itself
    dd = (d[1:] - d[:-1])[ok[1:] & ok[:-1]]
    assert float(dd.pow(2).mean().sqrt()) < 0.15 * rms
    # correlated per segment: markers on one body move together more than across bodies
    topo = subj.topology
    pel = [i for i, b in enumerate(topo.marker_bodies) if b == 0]
    a, b = d[:, pel[0], 0], d[:, pel[1], 0]
    m = torch.isfinite(a) & torch.isfinite(b)
    assert float(torch.corrcoef(torch.stack([a[m], b[m]]))[0, 1]) > 0.7
