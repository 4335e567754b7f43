"""The 18-DOF lower-body model (6-DOF pelvis; per leg 3 hip, 1 knee, 2 ankle).

Geometry and joint axes follow OpenSim's generic Gait2392 model (adult, about 1.8 m / 75 kg;
Y up, X forward, Z to the right), with Gait2392's coordinate names and sign conventions:
knee flexion is negative, ankle dorsiflexion positive. The knee is a pin at the position of
Gait2392's rolling knee at extension. Marker sets place markers where each protocol puts them:

* ``"cmu"``: CMU Graphics Lab 41-marker Vicon set, lower body (front/back waist, thigh, knee,
  shin, ankle, heel, toe, fifth metatarsal);
* ``"pig"``: Vicon Plug-in-Gait lower body (ASIS, PSIS, thigh, knee, tibia, ankle, heel, toe);
* ``"opensim"``: Gait2392's own lower-body markers (``R.ASIS``, ``R.Thigh.Upper``, ...).
"""
from __future__ import annotations

import math

import torch

from ..model import Dof, Joint, Model, ModelBuilder

__all__ = ["lower_body", "MARKER_SETS"]

_DEG = math.pi / 180.0

# Right-side anatomical landmarks (metres, in the named body's frame); left = mirror in Z.
_LANDMARKS = {
    "asis": ("pelvis", (0.0229, 0.0354, 0.1277)),
    "psis": ("pelvis", (-0.1550, 0.0450, 0.0450)),
    "sacrum": ("pelvis", (-0.1684, 0.0393, 0.0)),
    "thigh_lateral": ("femur", (0.0100, -0.2500, 0.0750)),
    "thigh_upper": ("femur", (0.0404, -0.1917, 0.0801)),
    "thigh_front": ("femur", (0.0946, -0.2453, -0.0006)),
    "thigh_rear": ("femur", (0.0310, -0.2968, 0.0714)),
    "lateral_epicondyle": ("femur", (-0.0030, -0.3860, 0.0550)),
    "medial_epicondyle": ("femur", (0.0005, -0.3860, -0.0520)),
    "shank_upper": ("tibia", (-0.0274, -0.0597, 0.0702)),
    "shank_front": ("tibia", (0.0510, -0.0952, 0.0198)),
    "shank_rear": ("tibia", (-0.0114, -0.1452, 0.0803)),
    "shin": ("tibia", (0.0350, -0.2200, 0.0250)),
    "tibia_lateral": ("tibia", (0.0100, -0.2800, 0.0550)),
    "lateral_malleolus": ("tibia", (-0.0076, -0.4305, 0.0555)),
    "medial_malleolus": ("tibia", (0.0046, -0.4161, -0.0334)),
    "heel": ("calcn", (-0.0183, 0.0250, 0.0)),
    "midfoot_sup": ("calcn", (0.1101, 0.0301, -0.0363)),
    "midfoot_lat": ("calcn", (0.1061, 0.0060, 0.0587)),
    "second_metatarsal_head": ("calcn", (0.1750, 0.0250, -0.0050)),
    "fifth_metatarsal_head": ("calcn", (0.1700, 0.0000, 0.0550)),
    "toe_lateral": ("calcn", (0.1875, -0.0146, 0.0654)),
    "toe_medial": ("calcn", (0.1883, 0.0032, -0.0310)),
    "toe_tip": ("calcn", (0.2432, 0.0032, -0.0028)),
}

# marker set -> (name for the right side, name for the left side, landmark); bilateral
# landmarks on the pelvis have explicit names for each side.
MARKER_SETS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "cmu": (
        ("RFWT", "LFWT", "asis"),
        ("RBWT", "LBWT", "psis"),
        ("RTHI", "LTHI", "thigh_lateral"),
        ("RKNE", "LKNE", "lateral_epicondyle"),
        ("RSHN", "LSHN", "shin"),
        ("RANK", "LANK", "lateral_malleolus"),
        ("RHEE", "LHEE", "heel"),
        ("RTOE", "LTOE", "second_metatarsal_head"),
        ("RMT5", "LMT5", "fifth_metatarsal_head"),
    ),
    "pig": (
        ("RASI", "LASI", "asis"),
        ("RPSI", "LPSI", "psis"),
        ("RTHI", "LTHI", "thigh_lateral"),
        ("RKNE", "LKNE", "lateral_epicondyle"),
        ("RTIB", "LTIB", "tibia_lateral"),
        ("RANK", "LANK", "lateral_malleolus"),
        ("RHEE", "LHEE", "heel"),
        ("RTOE", "LTOE", "second_metatarsal_head"),
    ),
    "opensim": (
        ("R.ASIS", "L.ASIS", "asis"),
        ("V.Sacral", "", "sacrum"),
        ("R.Thigh.Upper", "L.Thigh.Upper", "thigh_upper"),
        ("R.Thigh.Front", "L.Thigh.Front", "thigh_front"),
        ("R.Thigh.Rear", "L.Thigh.Rear", "thigh_rear"),
        ("R.Knee.Lat", "L.Knee.Lat", "lateral_epicondyle"),
        ("R.Knee.Med", "L.Knee.Med", "medial_epicondyle"),
        ("R.Shank.Upper", "L.Shank.Upper", "shank_upper"),
        ("R.Shank.Front", "L.Shank.Front", "shank_front"),
        ("R.Shank.Rear", "L.Shank.Rear", "shank_rear"),
        ("R.Ankle.Lat", "L.Ankle.Lat", "lateral_malleolus"),
        ("R.Ankle.Med", "L.Ankle.Med", "medial_malleolus"),
        ("R.Heel", "L.Heel", "heel"),
        ("R.Midfoot.Sup", "L.Midfoot.Sup", "midfoot_sup"),
        ("R.Midfoot.Lat", "L.Midfoot.Lat", "midfoot_lat"),
        ("R.Toe.Lat", "L.Toe.Lat", "toe_lateral"),
        ("R.Toe.Med", "L.Toe.Med", "toe_medial"),
        ("R.Toe.Tip", "L.Toe.Tip", "toe_tip"),
    ),
}

# coordinate ranges (degrees): anatomical limits of healthy adults
_RANGES = {
    "hip_flexion": (-30.0, 120.0),
    "hip_adduction": (-30.0, 30.0),
    "hip_rotation": (-45.0, 45.0),
    "knee_angle": (-120.0, 10.0),
    "ankle_angle": (-40.0, 30.0),
    "subtalar_angle": (-25.0, 25.0),
}


def _leg(mb: ModelBuilder, side: str) -> None:
    m = 1.0 if side == "r" else -1.0  # mirror Z (and the axes that flip with it)
    mb.add_body(
        f"femur_{side}",
        Joint.ball(
            f"hip_{side}",
            "pelvis",
            (f"hip_flexion_{side}", f"hip_adduction_{side}", f"hip_rotation_{side}"),
            axes=((0, 0, 1), (m, 0, 0), (0, m, 0)),
            parent_location=(-0.0707, -0.0661, m * 0.0835),
        ),
    )
    mb.add_body(
        f"tibia_{side}",
        Joint.pin(f"knee_{side}", f"femur_{side}", f"knee_angle_{side}", (0, 0, 1), parent_location=(-0.0041, -0.3957, 0.0)),
    )
    mb.add_body(
        f"talus_{side}",
        Joint(
            f"ankle_{side}",
            f"tibia_{side}",
            parent_location=(0.0, -0.43, 0.0),
            rotations=(Dof((-0.10501355 * m, -0.17402245 * m, 0.97912632), f"ankle_angle_{side}"),),
        ),
    )
    mb.add_body(
        f"calcn_{side}",
        Joint(
            f"subtalar_{side}",
            f"talus_{side}",
            parent_location=(-0.04877, -0.04195, m * 0.00792),
            rotations=(Dof((0.78717961 * m, 0.60474746 * m, -0.12094949), f"subtalar_angle_{side}"),),
        ),
    )
    for base, (lo, hi) in _RANGES.items():
        mb.add_coordinate(f"{base}_{side}", 0.0, (lo * _DEG, hi * _DEG), clamped=True)


def lower_body(marker_set: str = "cmu", dtype: torch.dtype = torch.float32, device=None) -> Model:
    """The 18-DOF lower-body model with a marker set (``"cmu"``, ``"pig"`` or ``"opensim"``).

    Coordinates (OpenSim Gait2392 names, rad / m): ``pelvis_tilt, pelvis_list,
    pelvis_rotation, pelvis_tx, pelvis_ty, pelvis_tz``, then per leg (``_r`` then ``_l``)
    ``hip_flexion, hip_adduction, hip_rotation, knee_angle, ankle_angle, subtalar_angle``.
    Bodies: ``pelvis, femur, tibia, talus, calcn`` per side. Y up, X forward.
    """
    if marker_set not in MARKER_SETS:
        raise ValueError(f"unknown marker_set '{marker_set}'; choose one of {sorted(MARKER_SETS)}")
    mb = ModelBuilder(f"lower_body_{marker_set}")
    pelvis = ("pelvis_tilt", "pelvis_list", "pelvis_rotation", "pelvis_tx", "pelvis_ty", "pelvis_tz")
    mb.add_body("pelvis", Joint.free("ground_pelvis", pelvis))
    for name in pelvis[:3]:
        mb.add_coordinate(name, 0.0, (-math.pi / 2, math.pi / 2))
    mb.add_coordinate("pelvis_tx", 0.0, (-20.0, 20.0), motion=None)
    mb.add_coordinate("pelvis_ty", 0.95, (-1.0, 3.0))
    mb.add_coordinate("pelvis_tz", 0.0, (-20.0, 20.0))
    _leg(mb, "r")
    _leg(mb, "l")
    for right, left, landmark in MARKER_SETS[marker_set]:
        body, (x, y, z) = _LANDMARKS[landmark]
        for side, name, zz in (("r", right, z), ("l", left, -z)):
            if not name:
                continue
            b = body if body == "pelvis" else f"{body}_{side}"
            mb.add_marker(name, b, (x, y, zz))
    return mb.build(dtype=dtype, device=device)
