/* kinfunc motion viewer (kinfunc/viewer.py): plain JavaScript on a 2-D canvas with its own
   perspective projection; no library, nothing fetched. Reads the JSON block #kfv-data
   (arrays: base64 of little-endian float32/uint8, positions in mm, model frame Y up, X forward,
   Z right) and exposes window.kfViewer for tests. */
(function () {
  "use strict";
  var root = document.getElementById("kfv");
  var dataEl = document.getElementById("kfv-data");
  if (!root || !dataEl) return;
  var D = JSON.parse(dataEl.textContent);

  function decode(s, kind) {
    var bin = atob(s), n = bin.length, u = new Uint8Array(n);
    for (var i = 0; i < n; i++) u[i] = bin.charCodeAt(i);
    return kind === "u1" ? u : new Float32Array(u.buffer);
  }
  var A = D.arrays;
  var TIME = decode(A.time), FRAME = decode(A.frame), PTS = decode(A.points), MOD = decode(A.model),
      MEA = decode(A.measured), RMS = decode(A.rms), ANG = decode(A.angles),
      FFLAG = decode(A.frame_flag, "u1"), MFLAG = decode(A.marker_flag, "u1"), REF = A.ref ? decode(A.ref) : null;
  var F = D.n_shown, NP = D.n_points, M = D.n_markers, K = D.n_angles;
  var COL = {
    r: "#1f5fbf", l: "#9b3fb5", c: "#3c3c50", joint: "#111111", model: "#0e9aa7", measured: "#222222",
    down: "#e0218a", issue: "#ff8c00", doubtful: "#ff8c00", cursor: "#d62728", flag: "rgba(214,39,40,0.20)",
    grid: "#dcdcdc", curve: "#1f5fbf", rms: "#444444", ref: "#ff7f0e"
  };
  var RED = D.err_mm.red;
  function errColor(e) {
    var x = Math.max(0, Math.min(1, e / RED));
    return "hsl(" + Math.round(120 * (1 - x)) + ",80%," + Math.round(40 + 5 * (1 - x)) + "%)";
  }
  function fmt(v, d) {  // fixed decimals, "n/a" for NaN, no "-0"
    if (!isFinite(v)) return "n/a";
    var s = v.toFixed(d);
    return /^-0(\.0+)?$/.test(s) ? s.slice(1) : s;
  }

  // ---------------------------------------------------------------- issues per marker
  var issuesOf = [];
  for (var m = 0; m < M; m++) issuesOf.push([]);
  D.issues.forEach(function (it) { issuesOf[it.m].push(it); });
  function activeIssue(m, k) {
    var l = issuesOf[m];
    for (var i = 0; i < l.length; i++) if (l[i].a <= k && k <= l[i].b) return l[i];
    return null;
  }
  function flagRun(k) {
    for (var i = 0; i < D.flags.length; i++) if (D.flags[i].a <= k && k <= D.flags[i].b) return D.flags[i];
    return null;
  }

  // ---------------------------------------------------------------- elements
  var $ = function (id) { return document.getElementById(id); };
  var stage = root.querySelector(".kfv-stage"), canvas = $("kfv-canvas"), ctx = canvas.getContext("2d");
  var tip = $("kfv-tip"), banner = $("kfv-banner"), legend = $("kfv-legend");
  var playBtn = $("kfv-play"), slider = $("kfv-slider"), strip = $("kfv-strip"), timeLbl = $("kfv-time");
  var speedSel = $("kfv-speed"), followBox = $("kfv-follow"), resetBtn = $("kfv-reset"), curves = $("kfv-curves");

  // ---------------------------------------------------------------- camera and projection
  var FOV = 40 * Math.PI / 180, NEAR = 50;
  var cam = { az: 0.6, el: 0.22, dist: 3000, tx: 0, ty: 0, tz: 0 };
  var figY = 0, figSize = 1000;
  (function sizeFigure() {
    var lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
    function add(arr, n) {
      for (var i = 0; i < n; i++) for (var c = 0; c < 3; c++) {
        var v = arr[i * 3 + c];
        if (isFinite(v)) { if (v < lo[c]) lo[c] = v; if (v > hi[c]) hi[c] = v; }
      }
    }
    add(PTS, NP); add(MOD, M);
    if (!isFinite(lo[1])) { lo = [0, 0, 0]; hi = [1000, 1000, 1000]; }
    figY = 0.5 * (lo[1] + hi[1]);
    figSize = Math.max(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2], 500);
  })();
  function resetView() {
    cam.az = 0.6; cam.el = 0.22; cam.dist = 1.7 * figSize;
    cam.tx = PTS[cur * NP * 3]; cam.ty = figY; cam.tz = PTS[cur * NP * 3 + 2];
  }
  var V = null;
  function setupView(W, H) {
    var ce = Math.cos(cam.el), se = Math.sin(cam.el), ca = Math.cos(cam.az), sa = Math.sin(cam.az);
    var w = [ce * sa, se, ce * ca];  // target -> camera
    var ul = Math.hypot(w[2], w[0]) || 1e-9, u = [w[2] / ul, 0, -w[0] / ul];  // up x w
    var v = [w[1] * u[2] - w[2] * u[1], w[2] * u[0] - w[0] * u[2], w[0] * u[1] - w[1] * u[0]];
    V = { cx: cam.tx + cam.dist * w[0], cy: cam.ty + cam.dist * w[1], cz: cam.tz + cam.dist * w[2],
          u: u, v: v, w: w, f: 0.5 * H / Math.tan(FOV / 2), W: W, H: H };
  }
  function toCam(x, y, z) {
    var rx = x - V.cx, ry = y - V.cy, rz = z - V.cz;
    return [rx * V.u[0] + ry * V.u[1] + rz * V.u[2], rx * V.v[0] + ry * V.v[1] + rz * V.v[2],
            -(rx * V.w[0] + ry * V.w[1] + rz * V.w[2])];
  }
  function screen(c) { return [V.W / 2 + V.f * c[0] / c[2], V.H / 2 - V.f * c[1] / c[2], c[2]]; }
  function proj(x, y, z) {  // [sx, sy, depth] in CSS px, or null (behind the camera / missing)
    if (!(isFinite(x) && isFinite(y) && isFinite(z))) return null;
    var c = toCam(x, y, z);
    return c[2] < NEAR ? null : screen(c);
  }
  function seg3(a, b) {  // a segment clipped at the near plane -> [p, q] screen points or null
    var ca = toCam(a[0], a[1], a[2]), cb = toCam(b[0], b[1], b[2]);
    if (ca[2] < NEAR && cb[2] < NEAR) return null;
    if (ca[2] < NEAR || cb[2] < NEAR) {
      var s = (NEAR - ca[2]) / (cb[2] - ca[2]), cc = [ca[0] + s * (cb[0] - ca[0]), ca[1] + s * (cb[1] - ca[1]), NEAR];
      if (ca[2] < NEAR) ca = cc; else cb = cc;
    }
    return [screen(ca), screen(cb)];
  }
  function at(arr, n, k, i) { var o = (k * n + i) * 3; return [arr[o], arr[o + 1], arr[o + 2]]; }

  // ---------------------------------------------------------------- state
  var cur = 0, playing = false, speed = 1, tPlay = TIME[0], lastTs = null, follow = true, hover = null;
  var scrModel = new Float32Array(M * 2), scrMeas = new Float32Array(M * 2);
  var cssW = 0, cssH = 0, dpr = 1;

  function resize() {
    dpr = window.devicePixelRatio || 1;
    cssW = canvas.clientWidth || 800; cssH = canvas.clientHeight || 480;
    canvas.width = Math.round(cssW * dpr); canvas.height = Math.round(cssH * dpr);
    layoutCurves();
    drawStrip();
    draw();
  }

  // ---------------------------------------------------------------- 3-D view
  function draw() {
    var k = cur;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#fafafa"; ctx.fillRect(0, 0, cssW, cssH);
    if (follow) { cam.tx = PTS[k * NP * 3]; cam.tz = PTS[k * NP * 3 + 2]; }
    setupView(cssW, cssH);
    // floor grid, 0.5 m cells around the target
    var g = 500, n = 8, fy = D.floor_mm, gx = Math.round(cam.tx / g) * g, gz = Math.round(cam.tz / g) * g;
    ctx.strokeStyle = COL.grid; ctx.lineWidth = 1; ctx.beginPath();
    for (var i = -n; i <= n; i++) {
      var s1 = seg3([gx + i * g, fy, gz - n * g], [gx + i * g, fy, gz + n * g]);
      var s2 = seg3([gx - n * g, fy, gz + i * g], [gx + n * g, fy, gz + i * g]);
      [s1, s2].forEach(function (s) { if (s) { ctx.moveTo(s[0][0], s[0][1]); ctx.lineTo(s[1][0], s[1][1]); } });
    }
    ctx.stroke();
    // bones, far first
    var bones = [];
    for (var b = 0; b < D.bones.length; b++) {
      var pa = at(PTS, NP, k, D.bones[b][0]), pb = at(PTS, NP, k, D.bones[b][1]);
      var s = seg3(pa, pb);
      if (s) bones.push([s, 0.5 * (s[0][2] + s[1][2]), D.side[b]]);
    }
    bones.sort(function (x, y) { return y[1] - x[1]; });
    ctx.lineCap = "round"; ctx.lineWidth = 6;
    bones.forEach(function (bb) {
      ctx.strokeStyle = COL[bb[2]]; ctx.beginPath();
      ctx.moveTo(bb[0][0][0], bb[0][0][1]); ctx.lineTo(bb[0][1][0], bb[0][1][1]); ctx.stroke();
    });
    ctx.fillStyle = COL.joint;
    for (var j = 0; j < NP; j++) {
      var pj = at(PTS, NP, k, j), sj = proj(pj[0], pj[1], pj[2]);
      if (sj && j < D.n_bodies) {  // joint centres; leaf tips get no dot
        ctx.beginPath(); ctx.arc(sj[0], sj[1], 3.5, 0, 2 * Math.PI); ctx.fill();
      }
    }
    // markers: error lines, model (ring), measured (dot), issue rings
    var sm = [], ss = [];
    for (var m = 0; m < M; m++) {
      var a = at(MOD, M, k, m), c = at(MEA, M, k, m);
      sm.push(proj(a[0], a[1], a[2])); ss.push(proj(c[0], c[1], c[2]));
      scrModel[2 * m] = sm[m] ? sm[m][0] : NaN; scrModel[2 * m + 1] = sm[m] ? sm[m][1] : NaN;
      scrMeas[2 * m] = ss[m] ? ss[m][0] : NaN; scrMeas[2 * m + 1] = ss[m] ? ss[m][1] : NaN;
      if (sm[m] && ss[m]) {
        ctx.strokeStyle = errColor(dist3(a, c)); ctx.lineWidth = 2.5; ctx.beginPath();
        ctx.moveTo(sm[m][0], sm[m][1]); ctx.lineTo(ss[m][0], ss[m][1]); ctx.stroke();
      }
    }
    for (m = 0; m < M; m++) {
      var p = sm[m];
      if (!p) continue;
      ctx.beginPath(); ctx.arc(p[0], p[1], 4.5, 0, 2 * Math.PI);
      ctx.fillStyle = "#ffffff"; ctx.fill(); ctx.strokeStyle = COL.model; ctx.lineWidth = 2; ctx.stroke();
    }
    ctx.fillStyle = COL.measured;
    for (m = 0; m < M; m++) {
      if (!ss[m]) continue;
      ctx.beginPath(); ctx.arc(ss[m][0], ss[m][1], 3, 0, 2 * Math.PI); ctx.fill();
    }
    for (m = 0; m < M; m++) {
      var q = ss[m] || sm[m];
      if (!q) continue;
      var it = activeIssue(m, k);
      if (it) {
        var dw = it.weight < 0.999;
        ctx.strokeStyle = dw ? COL.down : COL.issue; ctx.lineWidth = dw ? 3 : 2; ctx.setLineDash([]);
        ctx.beginPath(); ctx.arc(q[0], q[1], 9, 0, 2 * Math.PI); ctx.stroke();
      }
      if (MFLAG[m]) {
        ctx.strokeStyle = COL.doubtful; ctx.lineWidth = 1.5; ctx.setLineDash([3, 3]);
        ctx.beginPath(); ctx.arc(q[0], q[1], it ? 13 : 8, 0, 2 * Math.PI); ctx.stroke(); ctx.setLineDash([]);
      }
    }
    if (hover !== null) {
      var h = hover.kind === "model" ? sm[hover.m] : ss[hover.m];
      if (h) { ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5; ctx.beginPath(); ctx.arc(h[0], h[1], 11, 0, 2 * Math.PI); ctx.stroke(); }
    }
    // doubtful frame banner
    var fr = FFLAG[k] ? flagRun(k) : null;
    stage.classList.toggle("kfv-doubtful", !!FFLAG[k]);
    if (FFLAG[k]) {
      banner.hidden = false;
      banner.textContent = "doubtful frame" + (fr ? "s " + fr.first + "-" + fr.last + " (" + fr.t0.toFixed(2) + "-" +
        fr.t1.toFixed(2) + " s): " + fr.reason : "");
    } else banner.hidden = true;
    timeLbl.textContent = TIME[k].toFixed(3) + " s \u00b7 frame " + FRAME[k] + "/" + (D.n_total - 1) +
      " \u00b7 RMS " + fmt(RMS[k], 1) + " mm";
    drawCurveCursor();
    if (hover !== null) showTip(hover);
  }
  function dist3(a, b) { return Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]); }

  // ---------------------------------------------------------------- hover
  function pick(x, y) {
    var best = null, bd = 10 * 10;
    for (var m = 0; m < M; m++) {
      [["measured", scrMeas], ["model", scrModel]].forEach(function (kv) {
        var sx = kv[1][2 * m], sy = kv[1][2 * m + 1];
        if (!isFinite(sx)) return;
        var d2 = (sx - x) * (sx - x) + (sy - y) * (sy - y);
        if (d2 < bd) { bd = d2; best = { m: m, kind: kv[0], x: sx, y: sy }; }
      });
    }
    return best;
  }
  function markerInfo(m, k) {
    var a = at(MOD, M, k, m), c = at(MEA, M, k, m), lines = [D.markers[m]];
    if (isFinite(c[0])) lines.push("error " + dist3(a, c).toFixed(1) + " mm (model to measured)");
    else lines.push(D.has_measured ? "measured marker missing in this frame" : "no measured markers given");
    var it = activeIssue(m, k);
    if (it) lines.push((it.weight < 0.999 ? "down-weighted to " + it.weight.toFixed(2) + ": " : "marker issue: ") + it.reason +
      ", frames " + it.first + "-" + it.last + " (" + it.t0.toFixed(2) + "-" + it.t1.toFixed(2) + " s), max " +
      it.max_mm.toFixed(0) + " mm");
    if (MFLAG[m]) lines.push("doubtful marker: RMS over the trial " + fmt(D.marker_rms_mm[m], 1) + " mm");
    else if (D.marker_rms_mm[m] !== null) lines.push("RMS over the trial " + D.marker_rms_mm[m].toFixed(1) + " mm");
    return lines.join("\n");
  }
  function showTip(h) {
    var sx = h.kind === "model" ? scrModel[2 * h.m] : scrMeas[2 * h.m], sy = h.kind === "model" ? scrModel[2 * h.m + 1] : scrMeas[2 * h.m + 1];
    if (!isFinite(sx)) { tip.hidden = true; return; }
    tip.textContent = markerInfo(h.m, cur) + (h.kind === "model" ? "\n(model marker)" : "\n(measured marker)");
    tip.hidden = false;
    var x = Math.min(sx + 14, cssW - tip.offsetWidth - 4), y = Math.min(sy + 14, cssH - tip.offsetHeight - 4);
    tip.style.left = Math.max(4, x) + "px"; tip.style.top = Math.max(4, y) + "px";
  }

  // ---------------------------------------------------------------- time strip under the slider
  function drawStrip() {
    var w = strip.clientWidth || 300, h = strip.clientHeight || 6, c = strip.getContext("2d");
    strip.width = Math.round(w * dpr); strip.height = Math.round(h * dpr);
    c.setTransform(dpr, 0, 0, dpr, 0, 0); c.clearRect(0, 0, w, h);
    c.fillStyle = "#d62728";
    var inset = 8, span = Math.max(1, F - 1);
    for (var k = 0; k < F; k++) if (FFLAG[k]) c.fillRect(inset + (w - 2 * inset) * k / span - 1, 0, Math.max(2, (w - 2 * inset) / span), h);
  }

  // ---------------------------------------------------------------- curves
  var cells = [], cw = 0, chH = 118, ncol = 1, curvesImg = null, cctx = curves.getContext("2d"), t0 = TIME[0], t1 = TIME[F - 1];
  if (!(t1 > t0)) t1 = t0 + 1;
  function series(i, ref) {  // i = -1: marker RMS; else angle i (of the reference with ref)
    var out = new Float32Array(F);
    for (var k = 0; k < F; k++) out[k] = i < 0 ? (ref ? NaN : RMS[k]) : (ref ? (REF ? REF[k * K + i] : NaN) : ANG[k * K + i]);
    return out;
  }
  function polyline(c, cell, v) {
    var pen = false;
    c.beginPath();
    for (var k = 0; k < F; k++) {
      if (!isFinite(v[k])) { pen = false; continue; }
      var X = xOf(cell, TIME[k]), Y = yOf(cell, v[k]);
      if (pen) c.lineTo(X, Y); else c.moveTo(X, Y);
      pen = true;
    }
    c.stroke();
  }
  function layoutCurves() {
    var w = curves.clientWidth || cssW || 800;
    ncol = Math.max(1, Math.floor(w / 230)); cw = w / ncol;
    var n = K + 1, rows = Math.ceil(n / ncol), h = rows * chH;
    curves.style.height = h + "px";
    curves.width = Math.round(w * dpr); curves.height = Math.round(h * dpr);
    var off = document.createElement("canvas"); off.width = curves.width; off.height = curves.height;
    var c = off.getContext("2d"); c.setTransform(dpr, 0, 0, dpr, 0, 0);
    c.fillStyle = "#ffffff"; c.fillRect(0, 0, w, h);
    cells = [];
    for (var i = 0; i < n; i++) {
      var x0 = (i % ncol) * cw, y0 = Math.floor(i / ncol) * chH;
      var cell = { x: x0 + 40, y: y0 + 18, w: cw - 50, h: chH - 34, i: i - 1 };
      var v = series(i - 1), r = series(i - 1, true), lo = Infinity, hi = -Infinity;
      for (var k = 0; k < F; k++) {
        if (isFinite(v[k])) { if (v[k] < lo) lo = v[k]; if (v[k] > hi) hi = v[k]; }
        if (isFinite(r[k])) { if (r[k] < lo) lo = r[k]; if (r[k] > hi) hi = r[k]; }
      }
      if (!isFinite(lo)) { lo = 0; hi = 1; }
      if (i === 0) lo = Math.min(lo, 0);
      if (hi - lo < 2) { var mid = 0.5 * (hi + lo); lo = mid - 1; hi = mid + 1; }
      var pad = 0.06 * (hi - lo); lo -= pad; hi += pad;
      cell.lo = lo; cell.hi = hi; cell.v = v;
      cells.push(cell);
      c.fillStyle = COL.flag;
      for (var f = 0; f < D.flags.length; f++) {
        var xa = xOf(cell, TIME[D.flags[f].a]), xb = xOf(cell, TIME[D.flags[f].b]);
        c.fillRect(xa - 1, cell.y, Math.max(2, xb - xa + 2), cell.h);
      }
      c.strokeStyle = "#bbb"; c.lineWidth = 1; c.strokeRect(cell.x, cell.y, cell.w, cell.h);
      if (lo < 0 && hi > 0) { c.strokeStyle = "#e4e4e4"; c.beginPath(); c.moveTo(cell.x, yOf(cell, 0)); c.lineTo(cell.x + cell.w, yOf(cell, 0)); c.stroke(); }
      if (REF && i > 0) { c.strokeStyle = COL.ref; c.lineWidth = 1.2; c.setLineDash([5, 3]); polyline(c, cell, r); c.setLineDash([]); }
      c.strokeStyle = i === 0 ? COL.rms : COL.curve; c.lineWidth = 1.4;
      polyline(c, cell, v);
      c.fillStyle = "#222"; c.font = "12px system-ui,sans-serif"; c.textBaseline = "alphabetic";
      c.fillText(i === 0 ? "marker RMS (mm)" : D.angle_names[i - 1] + " (deg)", cell.x, cell.y - 5);
      c.fillStyle = "#666"; c.font = "10px system-ui,sans-serif"; c.textAlign = "right";
      c.fillText(fmt(hi, i === 0 ? 1 : 0), cell.x - 3, cell.y + 9); c.fillText(fmt(lo, i === 0 ? 1 : 0), cell.x - 3, cell.y + cell.h);
      c.textAlign = "left";
      if (Math.floor(i / ncol) === Math.ceil(n / ncol) - 1 || i + ncol >= n) {
        c.fillText(t0.toFixed(2) + " s", cell.x, cell.y + cell.h + 11);
        c.textAlign = "right"; c.fillText(t1.toFixed(2) + " s", cell.x + cell.w, cell.y + cell.h + 11); c.textAlign = "left";
      }
    }
    curvesImg = off;
  }
  function xOf(cell, t) { return cell.x + cell.w * (t - t0) / (t1 - t0); }
  function yOf(cell, v) { return cell.y + cell.h * (1 - (v - cell.lo) / (cell.hi - cell.lo)); }
  function drawCurveCursor() {
    if (!curvesImg) return;
    cctx.setTransform(1, 0, 0, 1, 0, 0);
    cctx.drawImage(curvesImg, 0, 0);
    cctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    cctx.strokeStyle = COL.cursor; cctx.lineWidth = 1.5; cctx.fillStyle = COL.cursor;
    cctx.font = "11px system-ui,sans-serif"; cctx.textAlign = "right";
    cells.forEach(function (cell) {
      var x = xOf(cell, TIME[cur]);
      cctx.beginPath(); cctx.moveTo(x, cell.y); cctx.lineTo(x, cell.y + cell.h); cctx.stroke();
      cctx.fillText(fmt(cell.v[cur], 1), cell.x + cell.w, cell.y - 5);
    });
    cctx.textAlign = "left";
  }
  function frameAtTime(t) {  // last shown frame with time <= t
    var lo = 0, hi = F - 1;
    if (t <= TIME[0]) return 0;
    while (lo < hi) { var mid = (lo + hi + 1) >> 1; if (TIME[mid] <= t) lo = mid; else hi = mid - 1; }
    return lo;
  }
  function seekCurves(e) {
    var r = curves.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top;
    var col = Math.min(ncol - 1, Math.max(0, Math.floor(x / cw))), row = Math.floor(y / chH), cell = cells[row * ncol + col];
    if (!cell) cell = cells[col] || cells[0];
    var fr = Math.max(0, Math.min(1, (x - cell.x) / cell.w));
    var t = t0 + fr * (t1 - t0), k = frameAtTime(t);
    if (k < F - 1 && TIME[k + 1] - t < t - TIME[k]) k++;
    setFrame(k);
  }

  // ---------------------------------------------------------------- playback
  function setFrame(k, fromPlay) {
    k = Math.max(0, Math.min(F - 1, Math.round(k)));
    cur = k;
    if (!fromPlay) tPlay = TIME[k];
    if (+slider.value !== k) slider.value = String(k);
    draw();
  }
  function tick(ts) {
    if (!playing) return;
    if (lastTs === null) lastTs = ts;
    var dt = Math.min(0.25, (ts - lastTs) / 1000); lastTs = ts;
    var dur = TIME[F - 1] - TIME[0];
    if (F < 2) { requestAnimationFrame(tick); return; }
    if (!(dur > 0)) { setFrame((cur + 1) % F, true); requestAnimationFrame(tick); return; }
    tPlay += dt * speed;
    if (tPlay > TIME[F - 1]) tPlay = TIME[0] + (tPlay - TIME[F - 1]) % dur;
    var k = frameAtTime(tPlay);
    if (k !== cur) setFrame(k, true);
    requestAnimationFrame(tick);
  }
  function play() {
    if (playing) return;
    if (cur >= F - 1) setFrame(0);
    playing = true; lastTs = null; tPlay = TIME[cur];
    playBtn.innerHTML = "&#10074;&#10074; pause";
    requestAnimationFrame(tick);
  }
  function pause() { playing = false; playBtn.innerHTML = "&#9654; play"; }

  // ---------------------------------------------------------------- events
  playBtn.addEventListener("click", function () { if (playing) pause(); else play(); });
  slider.addEventListener("input", function () { setFrame(+slider.value); });
  speedSel.addEventListener("change", function () { speed = +speedSel.value || 1; });
  followBox.addEventListener("change", function () { follow = followBox.checked; draw(); });
  resetBtn.addEventListener("click", function () { resetView(); draw(); });
  var drag = null;
  canvas.addEventListener("pointerdown", function (e) {
    drag = { x: e.clientX, y: e.clientY, az: cam.az, el: cam.el };
    canvas.setPointerCapture(e.pointerId);
    canvas.focus();
  });
  canvas.addEventListener("pointermove", function (e) {
    if (drag) {
      cam.az = drag.az - (e.clientX - drag.x) * 0.01;
      cam.el = Math.max(-1.45, Math.min(1.45, drag.el + (e.clientY - drag.y) * 0.01));
      draw();
      return;
    }
    var r = canvas.getBoundingClientRect(), h = pick(e.clientX - r.left, e.clientY - r.top);
    var changed = (h === null) !== (hover === null) || (h && hover && (h.m !== hover.m || h.kind !== hover.kind));
    hover = h;
    if (!h) tip.hidden = true;
    if (changed) draw();
  });
  function endDrag(e) { if (drag) { drag = null; try { canvas.releasePointerCapture(e.pointerId); } catch (err) { /* released */ } } }
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("pointerleave", function () { if (!drag && hover) { hover = null; tip.hidden = true; draw(); } });
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    cam.dist = Math.max(0.2 * figSize, Math.min(20 * figSize, cam.dist * Math.exp(e.deltaY * 0.0015)));
    draw();
  }, { passive: false });
  canvas.addEventListener("dblclick", function () { resetView(); draw(); });
  var cdrag = false;
  curves.addEventListener("pointerdown", function (e) { cdrag = true; curves.setPointerCapture(e.pointerId); seekCurves(e); });
  curves.addEventListener("pointermove", function (e) { if (cdrag) seekCurves(e); });
  curves.addEventListener("pointerup", function () { cdrag = false; });
  strip.addEventListener("pointerdown", function (e) {
    var r = strip.getBoundingClientRect();
    setFrame((F - 1) * Math.max(0, Math.min(1, (e.clientX - r.left - 8) / Math.max(1, r.width - 16))));
  });
  root.addEventListener("keydown", function (e) {
    var tag = (e.target.tagName || "").toLowerCase();
    if (tag === "select" || tag === "button" || (tag === "input" && e.target.type !== "range")) return;
    if (e.key === " ") { e.preventDefault(); if (playing) pause(); else play(); }
    else if (tag !== "input" && (e.key === "ArrowRight" || e.key === "ArrowLeft")) {
      e.preventDefault(); setFrame(cur + (e.key === "ArrowRight" ? 1 : -1) * (e.shiftKey ? 10 : 1));
    }
  });
  window.addEventListener("resize", resize);

  // ---------------------------------------------------------------- legend
  function sw(c, label) { return '<i style="border-color:' + c + '"></i>' + label; }
  function dot(fill, stroke, label) { return '<b style="background:' + fill + ';border:2px solid ' + stroke + '"></b>' + label; }
  var lg = [sw(COL.r, "right") + " &nbsp;" + sw(COL.l, "left") + " &nbsp;" + sw(COL.c, "trunk") + " segments",
    dot("#fff", COL.model, "model marker") + " &nbsp;" + dot(COL.measured, COL.measured, "measured"),
    sw(errColor(0), "0") + " " + sw(errColor(RED / 2), (RED / 2).toFixed(0)) + " " + sw(errColor(RED), "&ge;" + RED.toFixed(0) + " mm error")];
  if (D.issues.some(function (x) { return x.weight < 0.999; })) lg.push(dot("transparent", COL.down, "down-weighted (robust)"));
  if (D.issues.some(function (x) { return x.weight >= 0.999; })) lg.push(dot("transparent", COL.issue, "marker issue"));
  if (Array.prototype.some.call(MFLAG, function (x) { return x; })) lg.push('<b style="border:2px dashed ' + COL.doubtful + '"></b>doubtful marker');
  if (REF) lg.push(sw(COL.curve, "kinfunc") + " " + '<i style="border-color:' + COL.ref + ';border-top-style:dashed"></i>' +
    String(D.reference_label).replace(/[<>&"]/g, "") + " (curves)");
  if (D.flags.length) lg.push('<i style="border-color:#d62728"></i>doubtful frames (time strip, curves)');
  legend.innerHTML = lg.join("<br>");

  // ---------------------------------------------------------------- go
  resetView();
  resize();
  window.kfViewer = {
    get frame() { return cur; }, get nFrames() { return F; }, get playing() { return playing; },
    get camera() { return { az: cam.az, el: cam.el, dist: cam.dist }; },
    play: play, pause: pause, setFrame: function (k) { setFrame(k); },
    setSpeed: function (s) { speed = s; speedSel.value = String(s); },
    project: function (kind, i) {  // CSS px relative to the canvas, or null
      var arr = kind === "model" ? MOD : kind === "measured" ? MEA : PTS, n = kind === "model" || kind === "measured" ? M : NP;
      var p = at(arr, n, cur, i), s = proj(p[0], p[1], p[2]);
      return s ? [s[0], s[1]] : null;
    },
    markerInfo: function (m) { return markerInfo(m, cur); },
    curveBox: function (i) {  // plot area of curve cell i (0: marker RMS, 1..K: angles), CSS px in #kfv-curves
      var c = cells[i]; return c ? { x: c.x, y: c.y, w: c.w, h: c.h } : null;
    },
    colors: COL, data: { n_total: D.n_total, n_shown: F, markers: D.markers, angles: D.angle_names, bones: D.bones, side: D.side },
    readyMs: performance.now(), ready: true
  };
})();
