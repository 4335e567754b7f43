"""The report's 3-D viewer (kinfunc.viewer): its data, size and self-containedness in Python, and
its behaviour in a real headless browser (playwright driving Debian's /usr/bin/chromium, or
playwright's own Chromium): loads without console errors within the time budget, plays,
seeks, draws the skeleton where the model puts it, shows marker errors and quality flags.

The browser tests skip, saying why, where playwright or a Chromium is missing
(``pip install playwright``; ``apt-get install chromium`` or ``python -m playwright install chromium``).
"""
from __future__ import annotations

import base64
import json
import os
import re
import struct
import sys
import time
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import kinfunc as kf
from kinfunc import viewer
from kinfunc.cli import main
from kinfunc.ik.quality import assess
from kinfunc.ik.synthetic import gait_motion, synthetic_trial

f64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]
LOAD_BUDGET_MS = 2000.0  # a 5000-frame full-body report must be ready within 2 s of navigation
DISPLACED = "LKNE"  # the marker displaced (and down-weighted) in the synthetic result


# ----------------------------------------------------------------------------- synthetic results
def synthetic_result(model: kf.Model, T: int, *, rate: float = 100.0, seed: int = 0, displaced=(20, 32),
                     bad_frames=(50, 53)) -> tuple[types.SimpleNamespace, kf.MarkerTrial]:
    """An IK-result look-alike without a solve (fast for long full-body trials): the truth plus
    a little angle noise as the fit, a trial with noise and gaps, ``DISPLACED`` moved 60 mm over
    the ``displaced`` frames (robust weight 0.05 there), every marker off by 40 mm over
    ``bad_frames`` (doubtful frames); quality from :func:`kinfunc.ik.quality.assess`."""
    q_true = gait_motion(model, T, rate=rate)
    tr = synthetic_trial(model, q_true, rate=rate, noise=0.002, gaps=0.01, seed=seed)
    g = torch.Generator().manual_seed(seed)
    q = q_true + 0.005 * torch.randn(q_true.shape, dtype=f64, generator=g)
    names = tuple(model.marker_names)
    xyz = tr.xyz.clone()
    m = names.index(DISPLACED)
    a, b = displaced
    xyz[a:b + 1, m] += torch.tensor([0.06, 0.0, 0.0], dtype=f64)
    c, d = bad_frames
    xyz[c:d + 1] += 0.04 * torch.randn(xyz[c:d + 1].shape, dtype=f64, generator=g)
    tr = type(tr)(names=tr.names, xyz=xyz, rate=tr.rate, time=tr.time, units=tr.units, source="synthetic")
    P = kf.marker_positions(model, q)
    err = torch.linalg.vector_norm(xyz - P, dim=-1)  # NaN where missing
    present = torch.isfinite(err)
    e2 = torch.where(present, err * err, torch.zeros_like(err))
    rms = (e2.sum(-1) / present.sum(-1).clamp_min(1)).sqrt()
    w = torch.ones_like(err)
    w[a:b + 1, m] = 0.05
    qual = assess(names, err, rms, xyz, P, present, tr.time, robust_weight=w)
    res = types.SimpleNamespace(q=q, model=model, time=tr.time, marker_names=names, marker_error=err, marker_rms=rms,
                                marker_max=torch.nan_to_num(err, nan=0.0).amax(-1), coverage=present.double().mean(0),
                                quality=qual, solver="synthetic", fit=("pose",))
    return res, tr


@pytest.fixture(scope="module")
def small():
    model = kf.models.lower_body("cmu", dtype=f64)
    return (model,) + synthetic_result(model, 120)


@pytest.fixture(scope="module")
def long_full_body():
    model = kf.models.full_body("cmu", dtype=f64)
    return (model,) + synthetic_result(model, 5000, displaced=(2000, 2040), bad_frames=(3000, 3010))


def _decode(d: dict, name: str, shape, dtype="<f4") -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["arrays"][name]), dtype=dtype).reshape(shape)


# ----------------------------------------------------------------------------- Python side
def test_viewer_data_matches_fk_markers_and_quality(small):
    model, res, tr = small
    d = viewer.viewer_data(model, res, tr)
    F, P, M, K = d["n_shown"], d["n_points"], d["n_markers"], d["n_angles"]
    assert F == 120 and d["n_total"] == 120 and M == len(res.marker_names) and d["n_bodies"] == model.topology.n_bodies
    pts = _decode(d, "points", (F, P, 3))
    poses = kf.fk(model, res.q)
    np.testing.assert_allclose(pts[:, :model.topology.n_bodies], poses.t.numpy() * 1e3, atol=1e-2)  # child_location 0
    np.testing.assert_allclose(_decode(d, "model", (F, M, 3)), kf.marker_positions(model, res.q).numpy() * 1e3, atol=1e-2)
    meas = _decode(d, "measured", (F, M, 3))
    np.testing.assert_array_equal(np.isnan(meas), np.isnan(tr.xyz.numpy()))
    np.testing.assert_allclose(meas, tr.xyz.numpy() * 1e3, atol=1e-2)
    ang = _decode(d, "angles", (F, K))
    i = model.coordinate_names.index("knee_angle_r")
    np.testing.assert_allclose(ang[:, d["angle_names"].index("knee_angle_r")], np.degrees(res.q[:, i].numpy()), atol=1e-3)
    # every body but the root hangs from its parent; leaf bodies with markers get a tip
    parents = model.topology.parents
    assert sorted(c for p, c in d["bones"] if c < model.topology.n_bodies) == [b for b, p in enumerate(parents) if p >= 0]
    assert {"r", "l"} <= set(d["side"])
    # quality: the displaced marker's down-weighted run, the doubtful frames
    (iss,) = [x for x in d["issues"] if d["markers"][x["m"]] == DISPLACED and x["first"] == 20]
    assert iss["a"] == 20 and iss["b"] == 32 and iss["weight"] == pytest.approx(0.05) and "displaced" in iss["reason"]
    ff = _decode(d, "frame_flag", (F,), "u1")
    assert ff[50:54].all() and ff.sum() <= 12 and d["flags"] and all(f["reason"] for f in d["flags"])
    assert "ref" not in d["arrays"]


def test_viewer_reference_curves_are_matched_by_name_and_time(small, tmp_path):
    model, res, tr = small
    mot = tmp_path / "ref.mot"
    kf.io.write_mot(mot, q=res.q[10:100] + 0.01, time=res.time[10:100], model=model)  # a shorter motion
    d = viewer.viewer_data(model, res, tr, reference=kf.io.read_mot(mot), reference_label="ref.mot")
    ref = _decode(d, "ref", (d["n_shown"], d["n_angles"]))
    k = d["angle_names"].index("hip_flexion_l")
    want = np.degrees(res.q[10:100, model.coordinate_names.index("hip_flexion_l")].numpy() + 0.01)
    np.testing.assert_allclose(ref[10:100, k], want, atol=2e-3)
    assert np.isnan(ref[:10]).all() and np.isnan(ref[100:]).all() and d["reference_label"] == "ref.mot"


def test_viewer_html_is_self_contained_and_small_for_5000_full_body_frames(long_full_body, tmp_path):
    model, res, tr = long_full_body
    t = time.perf_counter()
    page = viewer.write_viewer(tmp_path / "v.html", model, res, tr)
    took = time.perf_counter() - t
    text = page.read_text(encoding="utf-8")
    size = len(text.encode())
    print(f"\n5000-frame full-body viewer: {size / 1e6:.2f} MB, written in {took:.2f} s")
    assert size < 3_000_000  # ~2 MB: 1000 frames x (26 points + 2 x 41 markers) x 3 float32, base64
    assert "1000 of 5000 frames shown" in text
    d = json.loads(re.search(r'<script type="application/json" id="kfv-data">(.*?)</script>', text, re.S).group(1))
    assert d["n_shown"] == 1000 and d["step"] == 5
    # decimated flags still mark the doubtful frames and the issue run
    ff = _decode(d, "frame_flag", (1000,), "u1")
    assert ff[600:603].any()
    (iss,) = [x for x in d["issues"] if d["markers"][x["m"]] == DISPLACED and x["first"] == 2000]
    assert (iss["a"], iss["b"]) == (400, 408) and iss["weight"] < 0.1
    # self-contained: nothing loaded from elsewhere
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"<script[^>]*\bsrc\s*=|<link\b|@import|url\(\s*['\"]?(https?:)?//", text, re.I)
    assert "http://" not in text and "https://" not in text
    assert took < 10


def test_viewer_assets_ship_with_the_package():
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = cfg["tool"]["setuptools"]["package-data"]["kinfunc"]
    for name in ("_viewer.js", "_viewer.css"):
        assert name in data and (ROOT / "kinfunc" / name).is_file()
        assert "</script" not in (ROOT / "kinfunc" / name).read_text().lower()


def test_json_for_script_cannot_close_the_script_tag():
    # marker names and quality reasons come from data files: they must not end the data block
    out = viewer._json_for_script({"reason": "</script><script>alert(1)</script><!--"})
    assert "</" not in out and "<!--" not in out and json.loads(out)["reason"].startswith("</script>")


# ----------------------------------------------------------------------------- kinfunc view
def test_cli_view_prints_and_opens_the_report(tmp_path, monkeypatch, capsys):
    (tmp_path / "report.html").write_text("<!doctype html><p>x</p>")
    opened = []
    import webbrowser

    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    assert main(["view", str(tmp_path), "--no-open"]) == 0
    assert capsys.readouterr().out.strip() == str((tmp_path / "report.html").resolve()) and not opened
    assert main(["view", str(tmp_path)]) == 0
    assert opened == [(tmp_path / "report.html").resolve().as_uri()]


def test_cli_view_without_report_names_the_folder(tmp_path, capsys):
    empty = tmp_path / "no_report_here"
    empty.mkdir()
    assert main(["view", str(empty), "--no-open"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_report_here" in err and "no report.html" in err
    assert main(["view", str(tmp_path / "missing"), "--no-open"]) == 2
    assert "missing" in capsys.readouterr().err
    (empty / "trial1").mkdir()
    (empty / "trial1" / "report.html").write_text("x")
    assert main(["view", str(empty), "--no-open"]) == 2
    assert "trial1" in capsys.readouterr().err  # a batch folder points at its per-trial reports


# ----------------------------------------------------------------------------- browser
def _chromium_or_skip():
    """A started (playwright, browser) pair, or skip saying what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright not installed (pip install playwright): browser tests of the viewer skipped")
    exe = os.environ.get("KINFUNC_CHROMIUM") or next(
        (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
    try:
        pw = sync_playwright().start()
    except Exception as e:  # the driver cannot run here
        pytest.skip(f"playwright cannot start here ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}): "
                    "browser tests of the viewer skipped")
    errors = []
    for kw in ([{"executable_path": exe}] if exe else []) + [{}]:
        try:
            return pw, pw.chromium.launch(**kw)
        except Exception as e:  # no browser, or it cannot start here
            errors.append(f"{kw.get('executable_path', 'playwright chromium')}: {str(e).strip().splitlines()[0]}")
    pw.stop()
    pytest.skip("no Chromium could be started for the viewer's browser tests (apt-get install chromium, or python -m "
                "playwright install chromium): " + "; ".join(errors))


@pytest.fixture(scope="module")
def browser():
    pw, b = _chromium_or_skip()
    yield b
    b.close()
    pw.stop()


def _open(browser, path: Path, width: int = 1100, height: int = 900):
    page = browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.resolve().as_uri())
    page.wait_for_function("window.kfViewer && window.kfViewer.ready", timeout=10_000)
    return page, problems, requests


def _png_rgb(data: bytes) -> np.ndarray:
    """A PNG (8-bit RGB/RGBA, non-interlaced, as Chromium writes them) as ``(H, W, 3)`` uint8."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and not interlace
            ch = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * ch)
    out = np.zeros((h, w * ch), np.uint8)
    prev = np.zeros(w * ch, np.int32)
    n = w * ch
    for y in range(h):
        f, line = int(raw[y, 0]), raw[y, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 2:  # up
            cur = (line + prev) & 255
        elif f == 1:  # sub: a running sum along each channel
            cur = np.cumsum(line.reshape(w, ch), 0).reshape(-1) & 255
        else:  # average / paeth: sequential along the row
            L, B, cur = line.tolist(), prev.tolist(), [0] * n
            for x in range(n):
                a = cur[x - ch] if x >= ch else 0
                b = B[x]
                if f == 3:
                    pred = (a + b) >> 1
                else:
                    c = B[x - ch] if x >= ch else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[x] = (L[x] + pred) & 255
            cur = np.array(cur, np.int32)
        out[y] = cur
        prev = cur
    return out.reshape(h, w, ch)[..., :3]


def _hex_rgb(s: str) -> np.ndarray:
    return np.array([int(s[i:i + 2], 16) for i in (1, 3, 5)])


def _canvas_png(page) -> bytes:
    """The 3-D canvas as PNG bytes, read from the page (exact pixels, no compositor scaling)."""
    url = page.evaluate("document.getElementById('kfv-canvas').toDataURL('image/png')")
    return base64.b64decode(url.split(",", 1)[1])


@pytest.fixture(scope="module")
def small_page(small, tmp_path_factory):
    model, res, tr = small
    return viewer.write_viewer(tmp_path_factory.mktemp("v") / "viewer.html", model, res, tr, title="synthetic walk")


def test_browser_loads_plays_and_slider_moves_the_pose(browser, small_page):
    page, problems, requests = _open(browser, small_page)
    try:
        assert page.evaluate("kfViewer.frame") == 0 and page.evaluate("kfViewer.nFrames") == 120
        # play: the frame index and the slider advance
        page.click("#kfv-play")
        page.wait_for_function("kfViewer.frame > 5", timeout=5_000)
        assert page.evaluate("kfViewer.playing")
        page.click("#kfv-play")
        f = page.evaluate("kfViewer.frame")
        assert not page.evaluate("kfViewer.playing") and int(page.input_value("#kfv-slider")) == f > 5
        # the slider moves the pose: the right knee's joint centre moves on screen (the view
        # follows the pelvis) and the canvas changes
        knee = kf.models.lower_body("cmu").topology.body_index("tibia_r")
        page.evaluate("kfViewer.setFrame(0)")
        a, img_a = page.evaluate(f"kfViewer.project('point', {knee})"), _canvas_png(page)
        page.focus("#kfv-slider")
        for _ in range(40):
            page.keyboard.press("ArrowRight")
        assert page.evaluate("kfViewer.frame") == 40 and page.input_value("#kfv-slider") == "40"
        b, img_b = page.evaluate(f"kfViewer.project('point', {knee})"), _canvas_png(page)
        assert np.hypot(a[0] - b[0], a[1] - b[1]) > 5
        assert np.abs(_png_rgb(img_a).astype(int) - _png_rgb(img_b).astype(int)).sum(-1).astype(bool).mean() > 0.002
        assert "frame 40/119" in page.inner_text("#kfv-time")
        assert not problems, problems
        assert all(u.startswith(("file:", "data:", "about:")) for u in requests), requests
    finally:
        page.close()


def test_browser_screenshot_shows_the_skeleton(browser, small_page, tmp_path):
    page, problems, _ = _open(browser, small_page)
    try:
        page.evaluate("kfViewer.setFrame(30)")
        colours = page.evaluate("kfViewer.colors")
        right = _hex_rgb(colours["r"])
        box = page.locator("#kfv-canvas").bounding_box()
        shot = _png_rgb(page.screenshot(clip=box))  # what the user sees
        H, W, _ = shot.shape
        assert abs(H - round(box["height"])) <= 1 and abs(W - round(box["width"])) <= 1
        is_bone = np.abs(shot.astype(int) - right).max(-1) <= 12
        # the right thigh: pixels of the bone colour along femur_r -> tibia_r, none far from the skeleton
        topo = kf.models.lower_body("cmu").topology
        p = np.array(page.evaluate(f"kfViewer.project('point', {topo.body_index('femur_r')})"))
        c = np.array(page.evaluate(f"kfViewer.project('point', {topo.body_index('tibia_r')})"))
        hits = 0
        for s in np.linspace(0.2, 0.8, 7):
            x, y = np.round(p + s * (c - p)).astype(int)
            hits += bool(is_bone[max(0, y - 3):y + 4, max(0, x - 3):x + 4].any())
        assert hits >= 6, hits
        n_points = 1 + max(max(b) for b in page.evaluate("kfViewer.data.bones"))  # joint centres + leaf tips
        pts = np.array([page.evaluate(f"kfViewer.project('point', {i})") for i in range(n_points)])
        lo, hi = pts.min(0) - 10, pts.max(0) + 10
        lg = page.locator("#kfv-legend").bounding_box()  # the legend's colour swatches are not the skeleton
        is_bone[:int(lg["y"] - box["y"] + lg["height"]) + 1, :int(lg["x"] - box["x"] + lg["width"]) + 1] = False
        ys, xs = np.nonzero(is_bone)
        inside = (xs >= lo[0]) & (xs <= hi[0]) & (ys >= lo[1]) & (ys <= hi[1])
        assert len(xs) > 200 and inside.mean() > 0.98  # the right-side colour is the skeleton's, in its box
        # markers are drawn: the model-marker ring colour is on screen
        ring = _hex_rgb(colours["model"])
        assert (np.abs(shot.astype(int) - ring).max(-1) <= 12).sum() > 50
        assert not problems, problems
    finally:
        page.close()


def test_browser_hover_flags_and_curves(browser, small, small_page):
    model, res, tr = small
    page, problems, _ = _open(browser, small_page)
    try:
        m = list(res.marker_names).index(DISPLACED)
        page.evaluate("kfViewer.setFrame(25)")  # inside the displaced marker's down-weighted run
        box = page.locator("#kfv-canvas").bounding_box()
        x, y = page.evaluate(f"kfViewer.project('measured', {m})")
        page.mouse.move(box["x"] + x, box["y"] + y)
        page.wait_for_selector("#kfv-tip:not([hidden])", timeout=3_000)
        tip = page.inner_text("#kfv-tip")
        err = float(torch.linalg.vector_norm(tr.xyz[25, m] - kf.marker_positions(model, res.q[25])[m])) * 1e3
        assert DISPLACED in tip and f"error {err:.1f} mm" in tip and "down-weighted to 0.05" in tip, tip
        # down-weighted ring drawn around it
        shot = _png_rgb(_canvas_png(page))
        ring = np.abs(shot.astype(int) - _hex_rgb(page.evaluate("kfViewer.colors.down"))).max(-1) <= 12
        dpr = shot.shape[1] / box["width"]
        X, Y = int(x * dpr), int(y * dpr)
        r = int(14 * dpr)
        assert ring[Y - r:Y + r, X - r:X + r].sum() > 10
        # a doubtful frame: banner with its reason, red marks on the time strip
        page.mouse.move(1, 1)
        page.evaluate("kfViewer.setFrame(51)")
        assert page.is_visible("#kfv-banner") and "doubtful frame" in page.inner_text("#kfv-banner")
        red = page.evaluate("""(() => { const c = document.getElementById('kfv-strip');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] < 80 && d[i + 3] > 200) n++; return n; })()""")
        assert red > 0
        page.evaluate("kfViewer.setFrame(10)")
        assert not page.is_visible("#kfv-banner")
        # clicking a curve seeks to the time under the pointer
        cb = page.evaluate("kfViewer.curveBox(3)")
        cbox = page.locator("#kfv-curves").bounding_box()
        page.mouse.click(cbox["x"] + cb["x"] + 0.75 * cb["w"], cbox["y"] + cb["y"] + 0.5 * cb["h"])
        assert abs(page.evaluate("kfViewer.frame") - 0.75 * 119) <= 2
        # orbit and zoom
        cam0 = page.evaluate("kfViewer.camera")
        page.mouse.move(box["x"] + 100, box["y"] + 100)
        page.mouse.down()
        page.mouse.move(box["x"] + 200, box["y"] + 130, steps=4)
        page.mouse.up()
        page.mouse.wheel(0, 300)
        cam1 = page.evaluate("kfViewer.camera")
        assert cam1["az"] != cam0["az"] and cam1["el"] != cam0["el"] and cam1["dist"] > cam0["dist"]
        assert not problems, problems
    finally:
        page.close()


def test_browser_5000_frame_full_body_report_loads_within_budget(browser, long_full_body, tmp_path):
    model, res, tr = long_full_body
    path = viewer.write_viewer(tmp_path / "long.html", model, res, tr)
    t = time.perf_counter()
    page, problems, _ = _open(browser, path)
    wall = (time.perf_counter() - t) * 1e3
    try:
        ready = page.evaluate("kfViewer.readyMs")  # navigation start -> data decoded, first frame and curves drawn
        print(f"\n5000-frame full-body viewer ({path.stat().st_size / 1e6:.2f} MB): ready {ready:.0f} ms after "
              f"navigation start, {wall:.0f} ms wall for goto + ready")
        assert ready < LOAD_BUDGET_MS, f"viewer ready after {ready:.0f} ms (budget {LOAD_BUDGET_MS:.0f} ms)"
        assert page.evaluate("kfViewer.nFrames") == 1000
        page.click("#kfv-play")
        page.wait_for_function("kfViewer.frame > 0", timeout=5_000)
        assert not problems, problems
    finally:
        page.close()


def test_browser_report_html_from_make_report(browser, small, tmp_path):
    """The real report.html (matplotlib plots + viewer) opens without errors and embeds the viewer."""
    pytest.importorskip("matplotlib")
    from kinfunc import report

    model, res, tr = small
    truth = tmp_path / "truth.mot"
    kf.io.write_mot(truth, q=gait_motion(model, 120), time=res.time, model=model)
    files = report.make_report(res, tmp_path / "r", trial=tr, reference=truth, reference_label="truth")
    page, problems, requests = _open(browser, files["html"])
    try:
        assert page.evaluate("kfViewer.nFrames") == 120
        assert "truth (curves)" in page.inner_text("#kfv-legend")  # the reference is drawn under the fit
        assert page.evaluate("document.querySelector('img').naturalWidth") > 0  # report.png next to it
        assert not problems, problems
        assert all(u.startswith(("file:", "data:", "about:")) for u in requests), requests
        shot = os.environ.get("KINFUNC_VIEWER_SCREENSHOT")
        if shot:  # docs/img/viewer.png (README): KINFUNC_VIEWER_SCREENSHOT=docs/img/viewer.png pytest -k make_report
            page.set_viewport_size({"width": 900, "height": 1000})
            page.evaluate("kfViewer.setFrame(25)")  # the displaced marker is down-weighted here
            box = page.locator("#kfv-canvas").bounding_box()
            x, y = page.evaluate(f"kfViewer.project('measured', {list(res.marker_names).index(DISPLACED)})")
            page.mouse.move(box["x"] + x, box["y"] + y)
            page.wait_for_selector("#kfv-tip:not([hidden])")
            top = page.locator("#kfv").bounding_box()
            cb = page.locator("#kfv-curves").bounding_box()
            page.screenshot(path=shot, clip={"x": top["x"], "y": top["y"], "width": top["width"],
                                             "height": cb["y"] - top["y"] + 2 * 118})
    finally:
        page.close()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))
