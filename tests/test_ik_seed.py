"""The seed experiment (``bench/seed_experiment.py``) on the PiG walk: pose + global scale +
segment scales + marker offsets with the built-in lower-body model. Skips without the data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .shared import data


def test_seed_experiment_pig_walk():
    data("c3d/btk/PiG_Motion3_FF.c3d")
    spec = importlib.util.spec_from_file_location("seed_experiment", Path(__file__).resolve().parents[1] / "bench" / "seed_experiment.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    s, res, walk = mod.run(threads=1)
    assert (s["orientation"]["up"], s["orientation"]["forward"]) == ("+z", "+y")
    assert s["markers"] == 16 and s["frames"] == walk.n_frames
    assert s["mean_marker_rms_mm"] < 7.4  # better than the seed paper's figure on CMU walking
    assert s["all_angles_inside_limits"]
    for side in "rl":
        assert 55.0 <= s["knee_flexion_peak_deg"][side] <= 75.0  # swing-phase knee flexion
        lo, hi = s["hip_flexion_range_deg"][side]
        assert -35.0 < lo < -5.0 and 15.0 < hi < 45.0  # extension at push-off, flexion at heel strike
    assert 0.9 < s["global_scale"] < 1.1
