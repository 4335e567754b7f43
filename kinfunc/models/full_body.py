"""The whole-body anatomical model: 40 coordinates, 23 bodies, marker and keypoint sets.

Structure and conventions
-------------------------
Y up, X forward, Z to the right (OpenSim's frame), SI units. Bodies::

    pelvis -> femur -> tibia -> talus -> calcn -> toes            (per leg, _r and _l)
    pelvis -> torso -> head
    torso  -> scapula -> humerus -> ulna -> radius -> hand         (per arm, _r and _l)

Coordinates (OpenSim names and signs; rad / m)::

    pelvis_tilt, pelvis_list, pelvis_rotation, pelvis_tx, pelvis_ty, pelvis_tz
    per leg:  hip_flexion, hip_adduction, hip_rotation, knee_angle, ankle_angle,
              subtalar_angle, mtp_angle
    lumbar_extension, lumbar_bending, lumbar_rotation                 (pelvis -> torso)
    neck_flexion, neck_bending, neck_rotation                         (torso -> head)
    per arm:  arm_flex, arm_add, arm_rot (scapula -> humerus; the scapula only translates), elbow_flex (humerus -> ulna),
              pro_sup (ulna -> radius), wrist_flex, wrist_dev (radius -> hand)

Signs: hip/arm flexion +, hip/arm adduction +, hip/arm internal rotation +, knee flexion
**negative** (Gait2392/Hamner), ankle dorsiflexion +, mtp (toe) dorsiflexion +, lumbar
extension +, lumbar bending to the right +, lumbar rotation to the left +, neck flexion
(chin down) +, neck bending to the right +, neck rotation to the left +, elbow flexion +,
pronation + (0 = anatomical position, palm forward), wrist flexion (towards the palm) +,
ulnar deviation +. Every rotation of a left joint is the mirror image of the right one, so a
coordinate means the same movement on both sides. At zero the body stands in the anatomical
position (arms hanging, palms forward).

Sources (facts re-expressed in our own numbers and code; no file or code was copied)
------------------------------------------------------------------------------------
* Legs and pelvis: the geometry of :func:`kinfunc.models.lower_body` (OpenSim Gait2392:
  Delp et al. 1990, IEEE TBME 37:757; Anderson & Pandy 1999), plus the metatarsophalangeal
  joint of Gait2392 and a rolling knee after Yamaguchi & Zajac (1989, J Biomech 22:1), whose
  path Gait2392 and Hamner et al. (2010, J Biomech 43:2709) use; our spline knots
  (:data:`~kinfunc.models._parts.KNEE_PATH`) follow its shape.
* Trunk, arms, joint order and signs: the OpenSim full-body models of Hamner et al. (2010)
  and Rajagopal et al. (2016, IEEE TBME 63:2068), whose arms follow Holzbaur et al. (2005,
  Ann Biomed Eng 33:829): lumbar joint at L5/S1 with Z-X-Y rotations (extension, bending,
  rotation), shoulder as a Z-X-Y ball (flexion, adduction, rotation), an elbow axis tilted by
  the carrying angle, pronation about the axis from the distal ulna to the radial head, a
  two-axis wrist.
* Segment lengths: de Leva (1996, J Biomech 29:1223; adjusting Zatsiorsky-Seluyanov) and
  Dempster (1955) for an adult male of about 1.75 m: upper arm (shoulder to elbow centre)
  0.285 m, forearm (elbow to wrist centre) 0.265 m, wrist to third metacarpal head 0.085 m,
  head+neck (cervicale to vertex) 0.245 m; shoulder centres 0.34 m apart, 0.37 m above L5/S1.
* Neck: one 3-DOF joint at the cervicothoracic junction (C7/T1), as in head-neck models
  that lump the cervical spine (e.g. Vasavada et al. 1998).
* Marker sets: the CMU Graphics Lab 41-marker Vicon set and Vicon Plug-in-Gait full body
  (placement from the Plug-in-Gait reference guide); keypoints of pose estimators at the
  landmarks they are trained on (COCO, Halpe/AlphaPose, OpenPose BODY_25, Human3.6M, SMPL
  joint regressor) and OpenCap's augmented markers (Uhlrich et al. 2023, PLoS Comput Biol).
  Keypoints that are joint centres (hips, knees, ankles, shoulders, elbows, wrists, SMPL's
  spine/neck) sit at the model's joint centres; face points on the head.

Marker positions are a generic adult's; fit ``"segment_scales"`` and ``"marker_offsets"``
(:func:`kinfunc.ik.solve`) for a subject. ``MARKER_SETS`` lists each set as
``(right name, left name, landmark)`` rows (left ``""`` for single markers).
"""
from __future__ import annotations

import math

import torch

from .. import functions as F
from ..model import Dof, Joint, Model, ModelBuilder
from .lower_body import MARKER_SETS as LOWER_BODY_SETS
from ._parts import (
    ANKLE_LOCATION,
    DEG,
    HIP_LOCATION,
    KNEE_LOCATION,
    KNEE_PATH,
    LEG_LANDMARKS,
    MTP_LOCATION,
    add_leg,
    add_pelvis,
    mirror_axis,
    mirror_point,
)

__all__ = ["full_body", "MARKER_SETS", "LANDMARKS", "RANGES", "KNEE_PATH"]

Vec = tuple[float, float, float]

# ------------------------------------------------------------------------------ geometry
LUMBAR_LOCATION: Vec = (-0.1007, 0.0815, 0.0)  # L5/S1 in the pelvis (Gait2392 back joint)
NECK_LOCATION: Vec = (-0.035, 0.43, 0.0)  # C7/T1 in the torso (torso origin: L5/S1)
SHOULDER_LOCATION: Vec = (0.0, 0.372, 0.17)  # glenohumeral centre in the torso (right)
ELBOW_LOCATION: Vec = (0.0, -0.285, 0.0)  # elbow centre in the humerus (origin: GH centre)
# shoulder girdle translation with arm elevation (m, as amplitude * (1 - cos angle)): the
# scapulohumeral rhythm (Inman et al. 1944; clavicle elevation and scapular upward rotation,
# Ludewig et al. 2009) lifts the glenohumeral centre ~3-4 cm by 90 deg of abduction
GIRDLE_RHYTHM = {"abduction_up": 0.035, "flexion_up": 0.025, "abduction_lateral": -0.025}
CARRYING_ANGLE = 10.0 * DEG  # forearm points down and laterally at full extension
FOREARM_LENGTH = 0.265  # elbow centre -> wrist centre
_c, _s = math.cos(CARRYING_ANGLE), math.sin(CARRYING_ANGLE)
ELBOW_AXIS: Vec = (0.0, _s, _c)  # perpendicular to the forearm; lateral end up (right)
WRIST_CENTRE: Vec = (0.0, -FOREARM_LENGTH * _c, FOREARM_LENGTH * _s)  # in the ulna frame
RADIAL_HEAD: Vec = (0.0, -0.012, 0.022)  # proximal end of the pronation axis, ulna frame
ULNAR_HEAD: Vec = (WRIST_CENTRE[0], WRIST_CENTRE[1], WRIST_CENTRE[2] - 0.024)  # distal end
_ps = tuple(a - b for a, b in zip(RADIAL_HEAD, ULNAR_HEAD))
_n = math.sqrt(sum(v * v for v in _ps))
PRO_SUP_AXIS: Vec = tuple(v / _n for v in _ps)  # type: ignore[assignment]  # distal ulna -> radial head


def _in_radius(p: Vec) -> Vec:
    """A point given in the ulna frame (forearm at pro_sup 0) in the radius frame."""
    return (p[0] - RADIAL_HEAD[0], p[1] - RADIAL_HEAD[1], p[2] - RADIAL_HEAD[2])


def _in_toes(p: Vec) -> Vec:
    """A point given in the calcaneus frame (mtp 0) in the toes frame."""
    return (p[0] - MTP_LOCATION[0], p[1] - MTP_LOCATION[1], p[2] - MTP_LOCATION[2])


def _add(p: Vec, d: Vec) -> Vec:
    return (p[0] + d[0], p[1] + d[1], p[2] + d[2])


_W = WRIST_CENTRE
# Right-side landmarks (metres, in the named body's frame); left = mirror in Z. Bodies without
# a side (pelvis, torso, head) hold both sides' landmarks (mirrored) or single midline ones.
LANDMARKS: dict[str, tuple[str, Vec]] = {
    **LEG_LANDMARKS,
    # joint centres and other points of the legs
    "hip_centre": ("pelvis", HIP_LOCATION),
    "mid_hip": ("pelvis", (HIP_LOCATION[0], HIP_LOCATION[1], 0.0)),
    "smpl_pelvis": ("pelvis", (HIP_LOCATION[0], HIP_LOCATION[1] + 0.03, 0.0)),
    "knee_centre": ("femur", KNEE_LOCATION),
    "ankle_centre": ("tibia", ANKLE_LOCATION),
    "mtp_centre": ("calcn", MTP_LOCATION),
    "big_toe": ("toes", _in_toes((0.245, 0.0, -0.026))),
    "small_toe": ("toes", _in_toes((0.205, -0.004, 0.048))),
    "toe_dorsum": ("toes", _in_toes((0.205, 0.018, -0.012))),
    "thigh_cluster_1": ("femur", (0.025, -0.170, 0.078)),
    "thigh_cluster_2": ("femur", (0.060, -0.220, 0.068)),
    "thigh_cluster_3": ("femur", (0.005, -0.265, 0.078)),
    "shank_cluster_1": ("tibia", (0.020, -0.110, 0.062)),
    "shank_cluster_2": ("tibia", (0.042, -0.170, 0.050)),
    "shank_cluster_3": ("tibia", (0.000, -0.220, 0.060)),
    # torso (origin at L5/S1)
    "c7": ("torso", (-0.085, 0.440, 0.0)),
    "t10": ("torso", (-0.110, 0.215, 0.0)),
    "clavicle": ("torso", (0.040, 0.385, 0.0)),  # jugular notch
    "sternum": ("torso", (0.085, 0.235, 0.0)),  # xiphoid process
    "back": ("torso", (-0.105, 0.310, 0.110)),  # right scapula (CMU RBAC, PiG RBAK)
    "acromion": ("scapula", (-0.005, 0.048, 0.010)),  # relative to the glenohumeral centre
    "shoulder_centre": ("scapula", (0.0, 0.0, 0.0)),
    "neck_base": ("torso", (-0.010, 0.400, 0.0)),  # between the shoulders (OpenPose Neck)
    "thorax": ("torso", (-0.015, 0.390, 0.0)),  # Human3.6M Thorax
    "spine_mid": ("torso", (-0.020, 0.140, 0.0)),  # Human3.6M Spine
    "spine1": ("torso", (0.000, 0.030, 0.0)),  # SMPL spine joints
    "spine2": ("torso", (-0.030, 0.150, 0.0)),
    "spine3": ("torso", (-0.025, 0.250, 0.0)),
    "collar": ("torso", (-0.020, 0.385, 0.070)),
    "neck_centre": ("torso", NECK_LOCATION),
    # head (origin at C7/T1)
    "head_top": ("head", (0.030, 0.245, 0.0)),
    "head_centre": ("head", (0.015, 0.100, 0.0)),  # SMPL head joint
    "face_mid": ("head", (0.060, 0.100, 0.0)),  # Human3.6M Neck/Nose
    "nose": ("head", (0.115, 0.130, 0.0)),
    "eye": ("head", (0.085, 0.165, 0.032)),
    "ear": ("head", (0.005, 0.145, 0.072)),
    "front_head": ("head", (0.075, 0.190, 0.060)),
    "back_head": ("head", (-0.070, 0.130, 0.050)),
    # arm: humerus (origin at the glenohumeral centre)
    "upper_arm": ("humerus", (0.000, -0.170, 0.045)),
    "elbow_lateral": ("humerus", _add(ELBOW_LOCATION, (0.0, 0.0, 0.042))),
    "elbow_medial": ("humerus", _add(ELBOW_LOCATION, (0.0, 0.0, -0.042))),
    "elbow_centre": ("humerus", ELBOW_LOCATION),
    # forearm: radius (given in the ulna frame at pro_sup 0, palm forward)
    "forearm": ("radius", _in_radius((-0.020, -0.140, 0.050))),
    "wrist_centre": ("radius", _in_radius(_W)),
    "wrist_bar_thumb_cmu": ("radius", _in_radius(_add(_W, (-0.010, 0.0, 0.072)))),
    "wrist_bar_pinkie_cmu": ("radius", _in_radius(_add(_W, (-0.010, 0.0, -0.072)))),
    "wrist_bar_thumb": ("radius", _in_radius(_add(_W, (-0.010, 0.0, 0.036)))),
    "wrist_bar_pinkie": ("radius", _in_radius(_add(_W, (-0.010, 0.0, -0.036)))),
    "radial_styloid": ("radius", _in_radius(_add(_W, (0.0, 0.010, 0.030)))),
    "ulnar_styloid": ("radius", _in_radius(_add(_W, (-0.005, 0.010, -0.028)))),
    # hand (origin at the wrist centre)
    "finger": ("hand", (-0.015, -0.075, 0.020)),  # dorsum, below the 2nd metacarpal head
    "hand_centre": ("hand", (0.0, -0.085, 0.008)),  # third metacarpal head (SMPL hand)
}

_CENTRAL = {"pelvis", "torso", "head"}

# ------------------------------------------------------------------------------ marker sets
_CMU = (
    ("RFHD", "LFHD", "front_head"),
    ("RBHD", "LBHD", "back_head"),
    ("C7", "", "c7"),
    ("T10", "", "t10"),
    ("CLAV", "", "clavicle"),
    ("STRN", "", "sternum"),
    ("RBAC", "", "back"),
    ("RSHO", "LSHO", "acromion"),
    ("RUPA", "LUPA", "upper_arm"),
    ("RELB", "LELB", "elbow_lateral"),
    ("RFRM", "LFRM", "forearm"),
    ("RWRA", "LWRA", "wrist_bar_thumb_cmu"),
    ("RWRB", "LWRB", "wrist_bar_pinkie_cmu"),
    ("RFIN", "LFIN", "finger"),
    *LOWER_BODY_SETS["cmu"],  # the legs and pelvis: the lower body's own set
)
_PIG = (
    ("RFHD", "LFHD", "front_head"),
    ("RBHD", "LBHD", "back_head"),
    ("C7", "", "c7"),
    ("T10", "", "t10"),
    ("CLAV", "", "clavicle"),
    ("STRN", "", "sternum"),
    ("RBAK", "", "back"),
    ("RSHO", "LSHO", "acromion"),
    ("RUPA", "LUPA", "upper_arm"),
    ("RELB", "LELB", "elbow_lateral"),
    ("RFRM", "LFRM", "forearm"),
    ("RWRA", "LWRA", "wrist_bar_thumb"),
    ("RWRB", "LWRB", "wrist_bar_pinkie"),
    ("RFIN", "LFIN", "finger"),
    *LOWER_BODY_SETS["pig"],
)
_COCO17 = (
    ("nose", "", "nose"),
    ("right_eye", "left_eye", "eye"),
    ("right_ear", "left_ear", "ear"),
    ("right_shoulder", "left_shoulder", "shoulder_centre"),
    ("right_elbow", "left_elbow", "elbow_centre"),
    ("right_wrist", "left_wrist", "wrist_centre"),
    ("right_hip", "left_hip", "hip_centre"),
    ("right_knee", "left_knee", "knee_centre"),
    ("right_ankle", "left_ankle", "ankle_centre"),
)
# COCO order: nose, left_eye, right_eye, left_ear, right_ear, left_shoulder, right_shoulder, ...
_COCO17_ORDER = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
_HALPE26 = (
    ("Nose", "", "nose"),
    ("REye", "LEye", "eye"),
    ("REar", "LEar", "ear"),
    ("RShoulder", "LShoulder", "shoulder_centre"),
    ("RElbow", "LElbow", "elbow_centre"),
    ("RWrist", "LWrist", "wrist_centre"),
    ("RHip", "LHip", "hip_centre"),
    ("RKnee", "LKnee", "knee_centre"),
    ("RAnkle", "LAnkle", "ankle_centre"),
    ("Head", "", "head_top"),
    ("Neck", "", "neck_base"),
    ("Hip", "", "mid_hip"),
    ("RBigToe", "LBigToe", "big_toe"),
    ("RSmallToe", "LSmallToe", "small_toe"),
    ("RHeel", "LHeel", "heel"),
)
_HALPE26_ORDER = (
    "Nose", "LEye", "REye", "LEar", "REar", "LShoulder", "RShoulder", "LElbow", "RElbow",
    "LWrist", "RWrist", "LHip", "RHip", "LKnee", "RKnee", "LAnkle", "RAnkle", "Head", "Neck",
    "Hip", "LBigToe", "RBigToe", "LSmallToe", "RSmallToe", "LHeel", "RHeel",
)  # fmt: skip
_BODY25 = (
    ("Nose", "", "nose"),
    ("Neck", "", "neck_base"),
    ("RShoulder", "LShoulder", "shoulder_centre"),
    ("RElbow", "LElbow", "elbow_centre"),
    ("RWrist", "LWrist", "wrist_centre"),
    ("MidHip", "", "mid_hip"),
    ("RHip", "LHip", "hip_centre"),
    ("RKnee", "LKnee", "knee_centre"),
    ("RAnkle", "LAnkle", "ankle_centre"),
    ("REye", "LEye", "eye"),
    ("REar", "LEar", "ear"),
    ("RBigToe", "LBigToe", "big_toe"),
    ("RSmallToe", "LSmallToe", "small_toe"),
    ("RHeel", "LHeel", "heel"),
)
_BODY25_ORDER = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip",
    "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
    "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
)  # fmt: skip
_H36M17 = (
    ("Hip", "", "mid_hip"),
    ("RHip", "LHip", "hip_centre"),
    ("RKnee", "LKnee", "knee_centre"),
    ("RFoot", "LFoot", "ankle_centre"),
    ("Spine", "", "spine_mid"),
    ("Thorax", "", "thorax"),
    ("Neck/Nose", "", "face_mid"),
    ("Head", "", "head_top"),
    ("RShoulder", "LShoulder", "shoulder_centre"),
    ("RElbow", "LElbow", "elbow_centre"),
    ("RWrist", "LWrist", "wrist_centre"),
)
_H36M17_ORDER = (
    "Hip", "RHip", "RKnee", "RFoot", "LHip", "LKnee", "LFoot", "Spine", "Thorax", "Neck/Nose",
    "Head", "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow", "RWrist",
)  # fmt: skip
_SMPL24 = (
    ("pelvis", "", "smpl_pelvis"),
    ("right_hip", "left_hip", "hip_centre"),
    ("spine1", "", "spine1"),
    ("right_knee", "left_knee", "knee_centre"),
    ("spine2", "", "spine2"),
    ("right_ankle", "left_ankle", "ankle_centre"),
    ("spine3", "", "spine3"),
    ("right_foot", "left_foot", "mtp_centre"),
    ("neck", "", "neck_centre"),
    ("right_collar", "left_collar", "collar"),
    ("head", "", "head_centre"),
    ("right_shoulder", "left_shoulder", "shoulder_centre"),
    ("right_elbow", "left_elbow", "elbow_centre"),
    ("right_wrist", "left_wrist", "wrist_centre"),
    ("right_hand", "left_hand", "hand_centre"),
)
_SMPL24_ORDER = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
_OPENCAP = (
    ("r.ASIS_study", "L.ASIS_study", "asis"),
    ("r.PSIS_study", "L.PSIS_study", "psis"),
    ("r_knee_study", "L_knee_study", "lateral_epicondyle"),
    ("r_mknee_study", "L_mknee_study", "medial_epicondyle"),
    ("r_ankle_study", "L_ankle_study", "lateral_malleolus"),
    ("r_mankle_study", "L_mankle_study", "medial_malleolus"),
    ("r_toe_study", "L_toe_study", "toe_dorsum"),
    ("r_5meta_study", "L_5meta_study", "fifth_metatarsal_head"),
    ("r_calc_study", "L_calc_study", "heel"),
    ("r_shoulder_study", "L_shoulder_study", "acromion"),
    ("C7_study", "", "c7"),
    ("r_thigh1_study", "L_thigh1_study", "thigh_cluster_1"),
    ("r_thigh2_study", "L_thigh2_study", "thigh_cluster_2"),
    ("r_thigh3_study", "L_thigh3_study", "thigh_cluster_3"),
    ("r_sh1_study", "L_sh1_study", "shank_cluster_1"),
    ("r_sh2_study", "L_sh2_study", "shank_cluster_2"),
    ("r_sh3_study", "L_sh3_study", "shank_cluster_3"),
    ("RHJC_study", "LHJC_study", "hip_centre"),
    ("r_lelbow_study", "L_lelbow_study", "elbow_lateral"),
    ("r_melbow_study", "L_melbow_study", "elbow_medial"),
    ("r_lwrist_study", "L_lwrist_study", "radial_styloid"),
    ("r_mwrist_study", "L_mwrist_study", "ulnar_styloid"),
)
# OpenCap's order: the 35 lower-body response markers of its augmenter, then the 8 arm ones
_OPENCAP_ORDER = (
    "r.ASIS_study", "L.ASIS_study", "r.PSIS_study", "L.PSIS_study", "r_knee_study",
    "r_mknee_study", "r_ankle_study", "r_mankle_study", "r_toe_study", "r_5meta_study",
    "r_calc_study", "L_knee_study", "L_mknee_study", "L_ankle_study", "L_mankle_study",
    "L_toe_study", "L_calc_study", "L_5meta_study", "r_shoulder_study", "L_shoulder_study",
    "C7_study", "r_thigh1_study", "r_thigh2_study", "r_thigh3_study", "L_thigh1_study",
    "L_thigh2_study", "L_thigh3_study", "r_sh1_study", "r_sh2_study", "r_sh3_study",
    "L_sh1_study", "L_sh2_study", "L_sh3_study", "RHJC_study", "LHJC_study", "r_lelbow_study",
    "r_melbow_study", "r_lwrist_study", "r_mwrist_study", "L_lelbow_study", "L_melbow_study",
    "L_lwrist_study", "L_mwrist_study",
)  # fmt: skip

# marker set -> rows (right name, left name or "", landmark)
MARKER_SETS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "cmu": _CMU,
    "pig": _PIG,
    "coco17": _COCO17,
    "halpe26": _HALPE26,
    "body25": _BODY25,
    "h36m17": _H36M17,
    "smpl24": _SMPL24,
    "opencap": _OPENCAP,
}
# the order each producer emits (keypoint index order); other sets: CMU's / PiG's own order
_ORDERS: dict[str, tuple[str, ...]] = {
    "coco17": _COCO17_ORDER,
    "halpe26": _HALPE26_ORDER,
    "body25": _BODY25_ORDER,
    "h36m17": _H36M17_ORDER,
    "smpl24": _SMPL24_ORDER,
    "opencap": _OPENCAP_ORDER,
}

# ------------------------------------------------------------------------------ coordinates
# anatomical ranges of healthy adults (degrees); the legs' are in _parts.LEG_RANGES
RANGES: dict[str, tuple[float, float]] = {
    "lumbar_extension": (-90.0, 45.0),
    "lumbar_bending": (-45.0, 45.0),
    "lumbar_rotation": (-45.0, 45.0),
    "neck_flexion": (-70.0, 60.0),
    "neck_bending": (-45.0, 45.0),
    "neck_rotation": (-80.0, 80.0),
    "arm_flex": (-90.0, 180.0),
    "arm_add": (-180.0, 45.0),
    "arm_rot": (-90.0, 90.0),
    "elbow_flex": (-5.0, 150.0),
    "pro_sup": (-10.0, 160.0),
    "wrist_flex": (-70.0, 80.0),
    "wrist_dev": (-25.0, 35.0),
}


def _rhythm(amplitude: float) -> F.Spline:
    """``amplitude * (1 - cos(q))`` as a natural spline through knots every 30 deg."""
    x = tuple(a * DEG for a in range(-180, 181, 30))
    return F.Spline(x, tuple(amplitude * (1.0 - math.cos(v)) for v in x))


def _arm(mb: ModelBuilder, side: str, clamped: bool, rhythm: bool) -> None:
    m = 1.0 if side == "r" else -1.0
    if rhythm:
        # the shoulder girdle translates (no rotation) with arm elevation: the humerus keeps
        # its humerothoracic angles, the glenohumeral centre and acromion rise and move medially
        girdle = (
            Dof((0.0, 1.0, 0.0), f"arm_flex_{side}", _rhythm(GIRDLE_RHYTHM["flexion_up"])),
            Dof((0.0, 1.0, 0.0), f"arm_add_{side}", _rhythm(GIRDLE_RHYTHM["abduction_up"])),
            Dof((0.0, 0.0, m), f"arm_add_{side}", _rhythm(GIRDLE_RHYTHM["abduction_lateral"])),
        )
    else:
        girdle = ()
    mb.add_body(
        f"scapula_{side}",
        Joint(f"girdle_{side}", "torso", parent_location=mirror_point(SHOULDER_LOCATION, m), translations=girdle),
    )
    mb.add_body(
        f"humerus_{side}",
        Joint.ball(
            f"shoulder_{side}",
            f"scapula_{side}",
            (f"arm_flex_{side}", f"arm_add_{side}", f"arm_rot_{side}"),
            axes=((0, 0, 1), (m, 0, 0), (0, m, 0)),
        ),
    )
    mb.add_body(
        f"ulna_{side}",
        Joint.pin(
            f"elbow_{side}", f"humerus_{side}", f"elbow_flex_{side}", mirror_axis(ELBOW_AXIS, m),
            parent_location=mirror_point(ELBOW_LOCATION, m),
        ),
    )
    mb.add_body(
        f"radius_{side}",
        Joint.pin(
            f"radioulnar_{side}", f"ulna_{side}", f"pro_sup_{side}", mirror_axis(PRO_SUP_AXIS, m),
            parent_location=mirror_point(RADIAL_HEAD, m),
        ),
    )
    mb.add_body(
        f"hand_{side}",
        Joint.universal(
            f"wrist_{side}",
            f"radius_{side}",
            (f"wrist_flex_{side}", f"wrist_dev_{side}"),
            axes=((0, 0, 1), (m, 0, 0)),
            parent_location=mirror_point(_in_radius(WRIST_CENTRE), m),
        ),
    )
    for base in ("arm_flex", "arm_add", "arm_rot", "elbow_flex", "pro_sup", "wrist_flex", "wrist_dev"):
        lo, hi = RANGES[base]
        mb.add_coordinate(f"{base}_{side}", 0.0, (lo * DEG, hi * DEG), clamped=clamped)


def full_body(
    marker_set: str = "cmu",
    dtype: torch.dtype = torch.float32,
    device=None,
    *,
    clamped: bool = True,
    rolling_knee: bool = True,
    shoulder_rhythm: bool = True,
) -> Model:
    """The whole-body model (40 coordinates) with a marker or keypoint set.

    ``marker_set``: ``"cmu"`` (CMU Graphics Lab 41-marker Vicon set), ``"pig"`` (Vicon
    Plug-in-Gait full body, 39 markers incl. the optional upper-arm and forearm ones),
    ``"coco17"``, ``"halpe26"``, ``"body25"`` (OpenPose), ``"h36m17"`` (Human3.6M),
    ``"smpl24"`` (SMPL joints), ``"opencap"`` (OpenCap's 43 augmented markers); keypoints are
    named and ordered as their estimator emits them. ``clamped``: whether coordinates (all but
    the pelvis) are flagged clamped to their anatomical ranges (IK enforces clamped ranges).
    ``rolling_knee``: the tibia translates with knee flexion along
    :data:`~kinfunc.models._parts.KNEE_PATH` (a pin at the extended position otherwise; then
    each leg equals :func:`~kinfunc.models.lower_body`'s exactly). ``shoulder_rhythm``: the
    shoulder girdle (a ``scapula`` body carrying the glenohumeral centre and the acromion)
    translates with arm elevation, as a smooth function of ``arm_add`` and ``arm_flex``
    (:data:`GIRDLE_RHYTHM`); it never rotates, so the arm angles stay humerothoracic as in
    OpenSim's models. Off: the shoulder is a ball joint fixed in the torso.

    Coordinates (see the module docstring for signs), ``q (C,) = (40,)``, rad / m::

        pelvis_tilt, pelvis_list, pelvis_rotation, pelvis_tx, pelvis_ty, pelvis_tz,
        hip_flexion_r, hip_adduction_r, hip_rotation_r, knee_angle_r, ankle_angle_r,
        subtalar_angle_r, mtp_angle_r, (same _l), lumbar_extension, lumbar_bending,
        lumbar_rotation, neck_flexion, neck_bending, neck_rotation, arm_flex_r, arm_add_r,
        arm_rot_r, elbow_flex_r, pro_sup_r, wrist_flex_r, wrist_dev_r, (same _l)

    Bodies (23): ``pelvis``, per leg ``femur tibia talus calcn toes``, ``torso``, ``head``,
    per arm ``scapula humerus ulna radius hand``. Y up, X forward, Z right; metres.
    """
    if marker_set not in MARKER_SETS:
        raise ValueError(f"unknown marker_set {marker_set!r} for full_body; choose one of {', '.join(MARKER_SETS)}")
    mb = ModelBuilder(f"full_body_{marker_set}")
    add_pelvis(mb)
    add_leg(mb, "r", rolling_knee=rolling_knee, toes=True, clamped=clamped)
    add_leg(mb, "l", rolling_knee=rolling_knee, toes=True, clamped=clamped)
    mb.add_body(
        "torso",
        Joint.ball(
            "lumbar", "pelvis", ("lumbar_extension", "lumbar_bending", "lumbar_rotation"),
            axes=((0, 0, 1), (1, 0, 0), (0, 1, 0)), parent_location=LUMBAR_LOCATION,
        ),
    )
    mb.add_body(
        "head",
        Joint.ball(
            "neck", "torso", ("neck_flexion", "neck_bending", "neck_rotation"),
            axes=((0, 0, -1), (1, 0, 0), (0, 1, 0)), parent_location=NECK_LOCATION,
        ),
    )
    for name in ("lumbar_extension", "lumbar_bending", "lumbar_rotation", "neck_flexion", "neck_bending", "neck_rotation"):
        lo, hi = RANGES[name]
        mb.add_coordinate(name, 0.0, (lo * DEG, hi * DEG), clamped=clamped)
    _arm(mb, "r", clamped, shoulder_rhythm)
    _arm(mb, "l", clamped, shoulder_rhythm)

    markers: dict[str, tuple[str, Vec]] = {}
    for right, left, landmark in MARKER_SETS[marker_set]:
        body, p = LANDMARKS[landmark]
        for side, name in (("r", right), ("l", left)):
            if not name:
                continue
            m = 1.0 if side == "r" else -1.0
            markers[name] = (body if body in _CENTRAL else f"{body}_{side}", mirror_point(p, m))
    for name in _ORDERS.get(marker_set, tuple(markers)):
        body, p = markers[name]
        mb.add_marker(name, body, p)
    return mb.build(dtype=dtype, device=device)
