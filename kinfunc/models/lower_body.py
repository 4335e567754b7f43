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

import torch

from ..model import Model, ModelBuilder
from ._parts import LEG_LANDMARKS, LEG_RANGES, add_leg, add_pelvis

__all__ = ["lower_body", "MARKER_SETS"]

# Right-side anatomical landmarks (metres, in the named body's frame); left = mirror in Z.
_LANDMARKS = LEG_LANDMARKS

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
_RANGES = LEG_RANGES


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
    add_pelvis(mb)
    add_leg(mb, "r")
    add_leg(mb, "l")
    for right, left, landmark in MARKER_SETS[marker_set]:
        body, (x, y, z) = _LANDMARKS[landmark]
        for side, name, zz in (("r", right, z), ("l", left, -z)):
            if not name:
                continue
            b = body if body == "pelvis" else f"{body}_{side}"
            mb.add_marker(name, b, (x, y, zz))
    return mb.build(dtype=dtype, device=device)
