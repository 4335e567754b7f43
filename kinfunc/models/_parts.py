"""Building blocks shared by the built-in models: the pelvis, the legs, left/right mirroring.

Everything here is in the model frame (Y up, X forward, Z to the right) and describes the
right side; the left side is its mirror image in the sagittal plane (Z -> -Z). Points mirror
as ``(x, y, -z)``; rotation axes (axial vectors) as ``(-x, -y, z)``, which keeps each
coordinate's anatomical meaning (flexion, adduction, internal rotation...) the same on both
sides.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from .. import functions as F
from ..model import Dof, Joint, ModelBuilder

__all__ = [
    "DEG",
    "LEG_LANDMARKS",
    "LEG_RANGES",
    "KNEE_LOCATION",
    "KNEE_PATH",
    "MTP_LOCATION",
    "mirror_point",
    "mirror_axis",
    "add_pelvis",
    "add_leg",
]

DEG = math.pi / 180.0

Vec = tuple[float, float, float]


def mirror_point(p: Sequence[float], m: float) -> Vec:
    """A right-side point ``p`` (m) for side ``m`` (+1 right, -1 left)."""
    return (float(p[0]), float(p[1]), m * float(p[2]))


def mirror_axis(a: Sequence[float], m: float) -> Vec:
    """A right-side rotation axis ``a`` for side ``m`` (+1 right, -1 left)."""
    return (m * float(a[0]), m * float(a[1]), float(a[2]))


# Right-side leg and pelvis landmarks (metres, in the named body's frame); left = mirror in Z.
# Geometry of OpenSim's generic Gait2392 adult (about 1.75-1.8 m), see lower_body.py.
LEG_LANDMARKS: dict[str, tuple[str, Vec]] = {
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

# coordinate ranges of a leg (degrees): anatomical limits of healthy adults
LEG_RANGES: dict[str, tuple[float, float]] = {
    "hip_flexion": (-30.0, 120.0),
    "hip_adduction": (-30.0, 30.0),
    "hip_rotation": (-45.0, 45.0),
    "knee_angle": (-120.0, 10.0),
    "ankle_angle": (-40.0, 30.0),
    "subtalar_angle": (-25.0, 25.0),
}
MTP_RANGE = (-30.0, 60.0)  # toe plantarflexion (-) / dorsiflexion (+), degrees

HIP_LOCATION: Vec = (-0.0707, -0.0661, 0.0835)  # hip centre in the pelvis (right)
KNEE_LOCATION: Vec = (-0.0041, -0.3957, 0.0)  # knee centre in the femur at full extension
ANKLE_LOCATION: Vec = (0.0, -0.43, 0.0)  # ankle centre in the tibia
MTP_LOCATION: Vec = (0.1788, -0.002, 0.00108)  # metatarsophalangeal axis point in the calcaneus
MTP_AXIS: Vec = (-0.5809, 0.0, 0.8139)  # along the metatarsal heads (right), toe dorsiflexion +

# Rolling-and-gliding knee: where the tibia's joint frame sits in the femur's, relative to the
# position at full extension (KNEE_LOCATION), as a function of knee_angle (rad; negative =
# flexion). Our own few knots of the path described by Yamaguchi & Zajac (1989) and used by
# OpenSim's Gait2392/Hamner knees: the tibia slides ~8 mm anteriorly by mid flexion and returns,
# and drops ~1 cm distally in deep flexion. Natural cubic splines through the knots (m).
KNEE_PATH: dict[str, tuple[float, ...]] = {
    "angle": tuple(a * DEG for a in (-120.0, -90.0, -60.0, -30.0, 0.0, 10.0)),
    "dx": (0.0010, 0.0072, 0.0084, 0.0052, 0.0, -0.0012),
    "dy": (-0.0110, -0.0035, 0.0003, 0.0006, 0.0, -0.0004),
}


def add_pelvis(mb: ModelBuilder) -> None:
    """The 6-DOF pelvis (Gait2392 names and order: tilt, list, rotation about Z, X, Y; then
    translations along X, Y, Z), standing 0.95 m high by default."""
    pelvis = ("pelvis_tilt", "pelvis_list", "pelvis_rotation", "pelvis_tx", "pelvis_ty", "pelvis_tz")
    mb.add_body("pelvis", Joint.free("ground_pelvis", pelvis))
    for name in pelvis[:3]:
        mb.add_coordinate(name, 0.0, (-math.pi / 2, math.pi / 2))
    mb.add_coordinate("pelvis_tx", 0.0, (-20.0, 20.0), motion=None)
    mb.add_coordinate("pelvis_ty", 0.95, (-1.0, 3.0))
    mb.add_coordinate("pelvis_tz", 0.0, (-20.0, 20.0))


def add_leg(
    mb: ModelBuilder, side: str, *, rolling_knee: bool = False, toes: bool = False, clamped: bool = True
) -> None:
    """One leg: femur (3-DOF hip), tibia (knee), talus (ankle), calcn (subtalar) and, with
    ``toes``, a toes body on the mtp joint. ``rolling_knee`` makes the tibia's joint frame
    translate with knee flexion along :data:`KNEE_PATH`; otherwise the knee is a pin at the
    extended position. Coordinates get :data:`LEG_RANGES` (and ``mtp_angle``), ``clamped``."""
    m = 1.0 if side == "r" else -1.0
    mb.add_body(
        f"femur_{side}",
        Joint.ball(
            f"hip_{side}",
            "pelvis",
            (f"hip_flexion_{side}", f"hip_adduction_{side}", f"hip_rotation_{side}"),
            axes=((0, 0, 1), (m, 0, 0), (0, m, 0)),
            parent_location=mirror_point(HIP_LOCATION, m),
        ),
    )
    knee = f"knee_angle_{side}"
    if rolling_knee:
        x = KNEE_PATH["angle"]
        mb.add_body(
            f"tibia_{side}",
            Joint(
                f"knee_{side}",
                f"femur_{side}",
                parent_location=KNEE_LOCATION,
                rotations=(Dof((0.0, 0.0, 1.0), knee),),
                translations=(
                    Dof((1.0, 0.0, 0.0), knee, F.Spline(x, KNEE_PATH["dx"])),
                    Dof((0.0, 1.0, 0.0), knee, F.Spline(x, KNEE_PATH["dy"])),
                ),
            ),
        )
    else:
        mb.add_body(f"tibia_{side}", Joint.pin(f"knee_{side}", f"femur_{side}", knee, (0, 0, 1), parent_location=KNEE_LOCATION))
    mb.add_body(
        f"talus_{side}",
        Joint(
            f"ankle_{side}",
            f"tibia_{side}",
            parent_location=ANKLE_LOCATION,
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
    if toes:
        mb.add_body(
            f"toes_{side}",
            Joint.pin(
                f"mtp_{side}", f"calcn_{side}", f"mtp_angle_{side}", mirror_axis(MTP_AXIS, m),
                parent_location=mirror_point(MTP_LOCATION, m),
            ),
        )
    for base, (lo, hi) in LEG_RANGES.items():
        mb.add_coordinate(f"{base}_{side}", 0.0, (lo * DEG, hi * DEG), clamped=clamped)
    if toes:
        mb.add_coordinate(f"mtp_angle_{side}", 0.0, (MTP_RANGE[0] * DEG, MTP_RANGE[1] * DEG), clamped=clamped)
