"""The `kinfunc` command: subprocess runs (bad input, real OpenSim trial) and in-process runs
of every subcommand (demo, ik batch, scale, fk, convert, info) checked against known answers."""
from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kinfunc as kf
from kinfunc import report
from kinfunc.cli import main
from kinfunc.ik.synthetic import gait_motion, synthetic_trial

f64 = torch.float64
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kinfunc.cli", *args]


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _walk_trc(path: Path, *, frames: int = 24, scale: float = 1.0, seed: int = 0, names=None) -> tuple[kf.Model, torch.Tensor]:
    model = kf.models.lower_body("cmu", dtype=f64)
    truth = model.replace(global_scale=torch.tensor(scale, dtype=f64))
    q = gait_motion(model, frames)
    tr = synthetic_trial(truth, q, noise=0.001, seed=seed)
    if names is not None:
        tr = tr.renamed(dict(zip(tr.names, names)))
    kf.io.write_trc(path, tr, units="mm")
    return truth, q


# ----------------------------------------------------------------------------- subprocess
def test_bad_input_exits_nonzero_with_one_line(tmp_path):
    """Missing file, malformed file, unknown marker names, unknown builtin: exit code != 0, one
    line on stderr naming the cause, no traceback; `--help` works. Run concurrently (import cost)."""
    bad_trc = tmp_path / "broken.trc"
    bad_trc.write_text("this is not a trc file\n1 2 3\n")
    alien = tmp_path / "alien.trc"
    _walk_trc(alien, frames=5, names=[f"XX{i}" for i in range(18)])
    good = tmp_path / "good.trc"
    _walk_trc(good, frames=5)
    cases = {
        "missing": (_cmd("ik", str(tmp_path / "nope.trc"), "--model", "builtin:cmu"), "nope.trc"),
        "malformed": (_cmd("ik", str(bad_trc), "--model", "builtin:cmu"), "broken.trc"),
        "markers": (_cmd("ik", str(alien), "--model", "builtin:cmu", "--no-report"), "marker names"),
        "builtin": (_cmd("ik", str(good), "--model", "builtin:nosuchset"), "builtin:cmu"),
    }
    procs = {k: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path)
             for k, (c, _) in cases.items()}
    helper = subprocess.Popen(_cmd("--help"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    out, _ = helper.communicate(timeout=120)
    assert helper.returncode == 0 and "demo" in out and "convert" in out
    for k, p in procs.items():
        out, err = p.communicate(timeout=120)
        lines = [ln for ln in err.strip().splitlines() if ln.startswith("kinfunc: error")]
        assert p.returncode != 0, (k, out, err)
        assert "Traceback" not in err, (k, err)
        assert len(lines) == 1, (k, err)
        assert cases[k][1] in lines[0], (k, lines[0])


def test_help_everywhere(capsys):
    for sub in ("demo", "ik", "scale", "fk", "convert", "info"):
        with pytest.raises(SystemExit) as e:
            main([sub, "--help"])
        assert e.value.code == 0
        assert "usage: kinfunc " + sub in capsys.readouterr().out


def test_ik_real_opensim_trial_matches_opensim(shared_data, tmp_path):
    """`kinfunc ik` on Gait2392 subject01_walk1 with OpenSim's setup reproduces OpenSim 4.6:
    same frames, mean marker RMS within 0.5 mm of its 22.13 mm, angles within 0.5 deg RMS."""
    d = shared_data / "opensim-gait2392"
    p = subprocess.run(
        _cmd("ik", str(d / "subject01_walk1.trc"), "--model", str(d / "subject01_simbody.osim"), "--setup",
             str(d / "subject01_Setup_IK.xml"), "--out", str(tmp_path), "--no-report"),
        capture_output=True, text=True, env=ENV, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "31 matched" in p.stderr
    ours = kf.io.read_mot(tmp_path / "subject01_walk1_ik.mot")
    ref = kf.io.read_mot(d / "opensim46_walk1_ik.mot")
    assert ours.n_frames == ref.n_frames == 121
    torch.testing.assert_close(ours.time, ref.time, rtol=0, atol=1e-6)
    model = kf.io.load_osim(d / "subject01_simbody.osim")
    rot = [n for n, m in zip(model.coordinate_names, model.topology.coordinate_motion)
           if m is kf.Motion.ROTATIONAL and not model.topology.coordinate_locked[model.coordinate_names.index(n)]]
    err = torch.stack([ours.column(n) - ref.column(n) for n in rot], -1)
    assert float(err.pow(2).mean().sqrt()) < 0.5 * math.pi / 180
    errs = kf.io.read_sto(tmp_path / "subject01_walk1_ik_marker_errors.sto")
    assert abs(float(errs.column("marker_error_RMS").mean()) - 0.02213) < 0.0005


# ----------------------------------------------------------------------------- in-process
def test_demo_end_to_end(tmp_path, capsys):
    """The demo: exit 0, outputs written and consistent, the fit recovers the known subject."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "joint angles vs truth" in text and "marker RMS" in text
    for f in ("walk_ik.mot", "walk_truth.mot", "model_fitted.json", "walk_markers.trc", "summary.txt"):
        assert (out / f).stat().st_size > 0, f
    if report.have_matplotlib():
        png = (out / "report.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
        assert "report.png" in (out / "report.html").read_text()
    else:
        assert not (out / "report.png").exists()
    fitted = kf.io.load_model(out / "model_fitted.json")
    truth = kf.io.read_mot(out / "walk_truth.mot")
    got = kf.io.read_mot(out / "walk_ik.mot")
    rot = [i for i, m in enumerate(fitted.topology.coordinate_motion) if m is kf.Motion.ROTATIONAL]
    err = (got.q_for(fitted) - truth.q_for(fitted))[:, rot]
    assert float(err.pow(2).mean().sqrt()) < 2.5 * math.pi / 180  # soft-tissue artefact ~ 1.6 deg
    from kinfunc.demo import SUBJECT_SCALES

    for b, v in SUBJECT_SCALES.items():
        if b != "pelvis":  # pelvis width trades against hip-marker offsets
            assert abs(float(fitted.body_scales[fitted.topology.body_index(b), 0]) / v - 1) < 0.02, b
    # the fitted model reproduces the walk's markers from the written motion (closes the loop)
    trial = kf.io.load_trc(out / "walk_markers.trc")
    x = kf.marker_positions(fitted.with_markers(trial.names), got.q_for(fitted))
    d = (x - trial.xyz).norm(dim=-1)
    assert float(d[torch.isfinite(d)].mean()) < 0.008


def test_ik_batch_parallel_with_failure_row(tmp_path, capsys):
    trials = tmp_path / "trials"
    trials.mkdir()
    truth, _ = _walk_trc(trials / "a.trc", seed=1)
    _walk_trc(trials / "b.trc", seed=2)
    (trials / "c.trc").write_text("garbage\n")
    code = main(["ik", str(trials), "--model", "builtin:cmu", "--jobs", "2", "--no-report", "--out", str(tmp_path / "o")])
    assert code == 1  # one trial failed
    rows = list(csv.DictReader(open(tmp_path / "o" / "summary.csv")))
    assert [Path(r["trial"]).name for r in rows] == ["a.trc", "b.trc", "c.trc"]
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]
    assert "c.trc" in rows[2]["error"]
    for r in rows[:2]:
        assert int(r["frames"]) == 24 and float(r["mean_rms_mm"]) < 3.0  # 1 mm/axis noise
        assert Path(r["motion"]).exists()


def test_scale_recovers_global_scale(tmp_path, capsys):
    static = tmp_path / "static.trc"
    _walk_trc(static, frames=20, scale=1.08)
    out = tmp_path / "scaled.json"
    assert main(["scale", str(static), "--model", "builtin:cmu", "--fit", "global_scale", "--out", str(out)]) == 0
    m = kf.io.load_model(out)
    assert abs(float(m.global_scale * m.body_scales[0, 0]) - 1.08) < 0.005


def test_fk_writes_model_markers(tmp_path, capsys):
    model = kf.models.lower_body("pig", dtype=f64)
    q = gait_motion(model, 15)
    mot = tmp_path / "walk.mot"
    kf.io.write_mot(mot, q=q, time=torch.arange(15, dtype=f64) / 100, model=model)
    mfile = kf.io.save_model(model, tmp_path / "m.json")
    out = tmp_path / "walk_markers.trc"
    assert main(["fk", str(mfile), str(mot), "--out", str(out)]) == 0
    tr = kf.io.load_trc(out)
    assert tr.names == model.marker_names and tr.rate == pytest.approx(100.0)
    torch.testing.assert_close(tr.xyz, kf.marker_positions(model, q), rtol=0, atol=1e-6)


def test_convert_and_info(tmp_path, capsys, shared_data):
    src = shared_data / "c3d" / "btk" / "PiG_Motion3_FF.c3d"
    if not src.exists():
        pytest.skip("PiG_Motion3_FF.c3d absent")
    dst = tmp_path / "pig.trc"
    assert main(["convert", str(src), str(dst)]) == 0
    a, b = kf.io.load_c3d(src), kf.io.load_trc(dst)
    assert a.names == b.names and a.n_frames == b.n_frames
    torch.testing.assert_close(b.xyz, a.xyz, rtol=0, atol=1e-6, equal_nan=True)
    capsys.readouterr()
    assert main(["info", str(dst)]) == 0
    text = capsys.readouterr().out
    assert f"{a.n_frames} frames x {a.n_markers} markers" in text and "orientation guess: up=+z" in text
    assert main(["info", "builtin:pig"]) == 0
    text = capsys.readouterr().out
    assert "18 coordinates" in text and "RASI@pelvis" in text


def test_auto_orient_is_reported_and_applied(tmp_path, capsys):
    """A Z-up lab trial: without orientation a hint is printed; --auto-orient applies and
    reports the guess and the fit is as good as on the Y-up original."""
    model = kf.models.lower_body("cmu", dtype=f64)
    q = gait_motion(model, 20)
    tr = synthetic_trial(model, q, noise=0.001, seed=3)
    R = kf.trial.axes_rotation(up="z", forward="+x")  # model <- lab
    lab = type(tr)(names=tr.names, xyz=tr.xyz @ R, rate=tr.rate, time=tr.time, units="m")
    p = tmp_path / "zup.trc"
    kf.io.write_trc(p, lab, units="mm")
    assert main(["ik", str(p), "--model", "builtin:cmu", "--auto-orient", "--no-report", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "--auto-orient applied up=+z forward=+x" in err
    got = kf.io.read_mot(tmp_path / "o" / "zup_ik.mot").q_for(model)
    assert float((got - q)[:, 6:].pow(2).mean().sqrt()) < 1 * math.pi / 180  # 1 mm noise


def test_ik_with_static_trial_fits_shape_first(tmp_path, capsys):
    """`--static`: scales/offsets fitted on the static trial, then pose-only IK on the walk;
    the walk's marker error drops to the noise level (vs. the generic model) and the fitted
    model is written."""
    static, walk = tmp_path / "static.trc", tmp_path / "walk.trc"
    _walk_trc(static, frames=20, scale=1.08, seed=5)
    _walk_trc(walk, frames=20, scale=1.08, seed=6)
    assert main(["ik", str(walk), "--model", "builtin:cmu", "--no-report", "--out", str(tmp_path / "plain")]) == 0
    plain = kf.io.read_sto(tmp_path / "plain" / "walk_ik_marker_errors.sto").column("marker_error_RMS").mean()
    assert main(["ik", str(walk), "--model", "builtin:cmu", "--static", str(static), "--no-report",
                 "--out", str(tmp_path / "st")]) == 0
    assert "static: IK" in capsys.readouterr().err
    fitted = kf.io.read_sto(tmp_path / "st" / "walk_ik_marker_errors.sto").column("marker_error_RMS").mean()
    assert float(fitted) < 0.0025 < float(plain)  # 1 mm/axis noise -> ~1.7 mm
    m = kf.io.load_model(tmp_path / "st" / "walk_model.json")
    fem = m.topology.body_index("femur_r")
    assert float(m.global_scale * m.body_scales[fem, 0]) > 1.02  # towards 1.08 (offsets absorb part, priors)


@pytest.mark.parametrize("argv, needle", [
    (["demo", "--device", "banana"], "--device banana"),
    (["info", "thing.xyz"], "thing.xyz"),
    (["fk", "builtin:cmu", "missing.mot"], "missing.mot"),
    (["convert", "missing.c3d", "x.trc"], "missing.c3d"),
    (["scale", "missing.trc", "--model", "builtin:cmu"], "missing.trc"),
    (["info", "model.json"], "model.json"),
    (["ik", "good.trc", "--model", "builtin:cmu", "--fit", "pose,wings"], "wings"),
    (["ik", "good.trc", "--model", "builtin:cmu", "--fit", "pose,segment_scales", "--height", "1620"],
     "--height=1620: height is in metres"),
    (["ik", "good.trc", "--model", "builtin:cmu", "--height", "1.62"], "--height 1.62 is a prior on the scales"),
    (["scale", "good.trc", "--model", "builtin:cmu", "--height", "0"], "positive number in metres"),
])
def test_bad_input_in_process(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "thing.xyz").write_text("?")
    (tmp_path / "model.json").write_text('{"format": "something-else"}')
    _walk_trc(tmp_path / "good.trc", frames=3)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kinfunc: error:") and needle in err[0]


def test_ik_height_prior(tmp_path, capsys):
    """`--height`: the subject's standing height pulls the scales the markers leave open."""
    from kinfunc.ik import model_height

    model = kf.models.lower_body("cmu", dtype=f64)
    H = 0.9 * model_height(model)
    _walk_trc(tmp_path / "walk.trc", frames=10, scale=0.9)
    assert main(["ik", str(tmp_path / "walk.trc"), "--model", "builtin:cmu", "--fit", "pose,segment_scales",
                 "--height", f"{H:.4f}", "--no-report", "--out", str(tmp_path / "o")]) == 0
    fitted = kf.io.load_model(tmp_path / "o" / "walk_model.json")
    assert abs(model_height(fitted) - H) < 0.01
