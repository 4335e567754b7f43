"""Marker names across protocols: match a trial's labels to a model's markers.

Protocols differ in spelling (``LASI`` / ``L.ASIS`` / ``LFWT``) for the same landmark. Each
name is reduced to a *key* ``(side, landmark)``: the subject prefix (``name:``) and
separators (``. _ - space``) are dropped, case is ignored, the side is read from a leading or
trailing ``L``/``R``/``LEFT``/``RIGHT`` and the rest is looked up in :data:`ALIASES`.

Matching (:func:`match`) pairs model and trial names in three passes -- exact name, same name
ignoring case/prefix/separators, same alias key -- each trial name used at most once; what
remains is reported as unmatched on both sides, and names that map to the same key as another
name on their side are reported as ambiguous instead of guessed.

Keypoints of pose estimators (COCO ``left_knee``, OpenPose/Halpe ``LKnee``, Human3.6M
``LFoot``, SMPL ``left_ankle``, OpenCap ``LHJC_study``...) denote joint centres or facial
points, not skin landmarks: their exact spellings are looked up first in :data:`KEYPOINTS`
(keys such as ``("L", "KNEE_JC")``), so ``left_knee`` pairs with ``LKnee`` but not with the
lateral-epicondyle marker ``LKNE``. OpenCap's augmented skin markers (``r.ASIS_study``,
``L_knee_study``, ...) share the keys of the lab markers they imitate.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Optional

__all__ = ["ALIASES", "KEYPOINTS", "Match", "landmark_key", "match"]

# landmark -> spellings used by CMU (Vicon 41-marker), Plug-in-Gait, OpenSim Gait2392 and
# common lab sets. Only spellings of the *same* anatomical landmark are grouped.
ALIASES: Mapping[str, tuple[str, ...]] = {
    "ASIS": ("ASI", "ASIS", "FWT", "ASISSTUDY"),  # anterior superior iliac spine (CMU: front waist)
    "PSIS": ("PSI", "PSIS", "BWT", "PSISSTUDY"),  # posterior superior iliac spine (CMU: back waist)
    "SACRUM": ("SACR", "SACRUM", "SACRAL", "VSACRAL", "VSAC", "SAC"),
    "THIGH": ("THI", "THIGH"),  # lateral thigh wand/marker
    "KNEE": ("KNE", "KNEE", "KNEELAT", "LFC", "KNEL", "KNEESTUDY"),  # lateral femoral epicondyle
    "KNEE_MED": ("KNM", "MKN", "MFC", "KNEEMED", "KNEM", "MKNE", "MKNEESTUDY"),
    "TIBIA": ("TIB", "SHN", "SHANK", "TIBIA"),  # lateral shank marker (PiG TIB == CMU SHN)
    "ANKLE": ("ANK", "ANKLE", "ANKLELAT", "LMAL", "LATMAL", "LMA", "ANKL", "ANKLESTUDY"),  # lateral malleolus
    "ANKLE_MED": ("MED", "MMAL", "ANKLEMED", "MEDMAL", "MMA", "ANKM", "MANK", "MANKLESTUDY"),
    "HEEL": ("HEE", "HEEL", "CAL", "CALC", "CALCSTUDY"),  # also OpenPose/Halpe LHeel
    "TOE": ("TOE", "MT2", "TOEMED2"),  # 2nd metatarsal head (PiG/CMU TOE)
    "MT5": ("MT5", "MET5", "VMH", "5METASTUDY"),
    "MT1": ("MT1", "MET1"),
    "SHOULDER": ("SHO", "SHOULDER", "ACR", "ACROMION", "SHOULDERSTUDY"),  # acromion
    "ELBOW": ("ELB", "ELBOW", "LEL", "ELBOWLAT", "LELBOWSTUDY"),  # lateral humeral epicondyle
    "ELBOW_MED": ("MEL", "MELB", "ELBOWMED", "MELBOWSTUDY"),
    "UPPER_ARM": ("UPA",),
    "FOREARM": ("FRM",),
    "WRIST_A": ("WRA",),
    "WRIST_B": ("WRB",),
    "FINGER": ("FIN",),
    "FRONT_HEAD": ("FHD",),
    "BACK_HEAD": ("BHD",),
    "BACK": ("BAC", "BAK"),  # scapula marker (CMU RBAC, Plug-in-Gait RBAK)
    "C7": ("C7", "C7STUDY"),
    "T10": ("T10",),
    "CLAVICLE": ("CLAV",),
    "STERNUM": ("STRN",),
    "TEMPLE": ("TEMPLE",),
}

# landmark -> exact spellings of pose-estimator keypoints (COCO, Halpe/AlphaPose, OpenPose
# BODY_25, Human3.6M, SMPL, OpenCap joint centres); the side is read from the name as usual.
# These are looked up before ALIASES (case-sensitive, whole name after any ``subject:`` prefix).
KEYPOINTS: Mapping[str, tuple[str, ...]] = {
    "HIP_JC": ("left_hip", "right_hip", "LHip", "RHip", "LHJC_study", "RHJC_study"),
    "MID_HIP": ("MidHip", "Hip"),  # OpenPose/Halpe mid-hip, Human3.6M root
    "KNEE_JC": ("left_knee", "right_knee", "LKnee", "RKnee", "Rknee"),
    "ANKLE_JC": ("left_ankle", "right_ankle", "LAnkle", "RAnkle", "LFoot", "RFoot"),  # H36M Foot = ankle
    "SHOULDER_JC": ("left_shoulder", "right_shoulder", "LShoulder", "RShoulder"),
    "ELBOW_JC": ("left_elbow", "right_elbow", "LElbow", "RElbow"),
    "WRIST_JC": ("left_wrist", "right_wrist", "LWrist", "RWrist"),
    "NOSE": ("nose", "Nose"),
    "EYE": ("left_eye", "right_eye", "LEye", "REye"),
    "EAR": ("left_ear", "right_ear", "LEar", "REar"),
    "NECK_BASE": ("Neck", "Thorax"),  # between the shoulders (OpenPose, Halpe; H36M thorax)
    "HEAD_TOP": ("Head",),  # Halpe, Human3.6M
    "BIG_TOE": ("LBigToe", "RBigToe"),
    "SMALL_TOE": ("LSmallToe", "RSmallToe"),
    "MTP_JC": ("left_foot", "right_foot"),  # SMPL foot joint (ball of the foot)
    "HAND": ("left_hand", "right_hand"),  # SMPL hand joint (knuckles)
    "NECK_JC": ("neck",),  # SMPL neck joint (cervicothoracic)
    "HEAD_JC": ("head",),  # SMPL head joint
    "PELVIS_JC": ("pelvis",),  # SMPL root
    "COLLAR": ("left_collar", "right_collar"),
    "SPINE1": ("spine1",),
    "SPINE2": ("spine2",),
    "SPINE3": ("spine3",),
    "SPINE_MID": ("Spine",),  # Human3.6M
    "FACE": ("Neck/Nose",),  # Human3.6M
}


_LOOKUP: dict[str, str] = {}
for _k, _names in ALIASES.items():
    for _n in _names:
        _LOOKUP[_n] = _k

_KEYPOINT_LOOKUP: dict[str, str] = {}
for _k, _names in KEYPOINTS.items():
    for _n in _names:
        _KEYPOINT_LOOKUP[_n] = _k

_SEP = re.compile(r"[\s._\-]+")


def _norm(name: str) -> str:
    base = name.rsplit(":", 1)[-1]
    return _SEP.sub("", base).upper()


def _split_side(name: str) -> tuple[Optional[str], str, str]:
    """(side or None, body, normalised whole) for a raw label."""
    base = name.rsplit(":", 1)[-1].strip()
    whole = _norm(base)
    parts = [p for p in _SEP.split(base) if p]
    up = [p.upper() for p in parts]
    # separated side word: "R.ASIS", "Right_Knee", "knee_l"
    if len(up) > 1 and up[0] in ("L", "R", "LEFT", "RIGHT"):
        return up[0][0], "".join(up[1:]), whole
    if len(up) > 1 and up[-1] in ("L", "R", "LEFT", "RIGHT"):
        return up[-1][0], "".join(up[:-1]), whole
    for word in ("LEFT", "RIGHT"):
        if whole.startswith(word) and len(whole) > len(word):
            return word[0], whole[len(word) :], whole
    if len(whole) > 1 and whole[0] in "LR":
        return whole[0], whole[1:], whole
    return None, whole, whole


_UNSIDED_KEYPOINTS = {"MID_HIP", "NOSE", "NECK_BASE", "HEAD_TOP", "NECK_JC", "HEAD_JC", "PELVIS_JC", "SPINE1", "SPINE2", "SPINE3", "SPINE_MID", "FACE"}


def landmark_key(name: str) -> Optional[tuple[Optional[str], str]]:
    """``(side, landmark)`` for a marker label, ``None`` when the landmark is not in
    :data:`ALIASES` or :data:`KEYPOINTS`. ``landmark_key("Bob:LFWT") == ("L", "ASIS") ==
    landmark_key("L.ASIS")``; ``landmark_key("left_knee") == ("L", "KNEE_JC") ==
    landmark_key("LKnee")``."""
    side, body, whole = _split_side(name)
    base = name.rsplit(":", 1)[-1].strip()
    if base in _KEYPOINT_LOOKUP:
        kp = _KEYPOINT_LOOKUP[base]
        return (None if kp in _UNSIDED_KEYPOINTS else side), kp
    if body in _LOOKUP:
        return side, _LOOKUP[body]
    if whole in _LOOKUP:  # unsided landmarks such as C7, SACR, V.Sacral
        return None, _LOOKUP[whole]
    return None


@dataclasses.dataclass(frozen=True)
class Match:
    """Result of :func:`match`.

    * ``pairs``: model marker name -> trial label, in model order;
    * ``how``: model marker name -> ``"exact"``, ``"normalised"`` or ``"alias"``;
    * ``unmatched_model`` / ``unmatched_trial``: names left over on each side;
    * ``ambiguous``: name -> other names on the same side sharing its alias key (not paired).
    """

    pairs: dict[str, str]
    unmatched_model: tuple[str, ...]
    unmatched_trial: tuple[str, ...]
    how: dict[str, str] = dataclasses.field(default_factory=dict)
    ambiguous: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @property
    def rename_map(self) -> dict[str, str]:
        """trial label -> model name, for ``trial.renamed(match.rename_map)``."""
        return {t: m for m, t in self.pairs.items()}

    def __str__(self) -> str:
        lines = [f"{len(self.pairs)} matched"]
        al = [f"{t}->{m}" for m, t in self.pairs.items() if self.how.get(m) != "exact"]
        if al:
            lines.append("renamed: " + ", ".join(al))
        if self.unmatched_model:
            lines.append("model markers without data: " + ", ".join(self.unmatched_model))
        if self.unmatched_trial:
            lines.append("trial markers not in model: " + ", ".join(self.unmatched_trial))
        if self.ambiguous:
            lines.append("ambiguous: " + ", ".join(f"{k} ~ {list(v)}" for k, v in self.ambiguous.items()))
        return "; ".join(lines)


def match(model_names: Sequence[str], trial_names: Iterable[str], *, aliases: bool = True) -> Match:
    """Pair ``model_names`` with ``trial_names`` (exact, then normalised, then by alias key).

    Returns a :class:`Match`; nothing is silently dropped: every name on either side is
    either paired or listed as unmatched."""
    model = list(model_names)
    trial = list(trial_names)
    pairs: dict[str, str] = {}
    how: dict[str, str] = {}
    used: set[str] = set()
    ambiguous: dict[str, tuple[str, ...]] = {}

    def free_model():
        return [m for m in model if m not in pairs]

    tset = set(trial)
    for m in model:
        if m in tset and m not in used:
            pairs[m], how[m] = m, "exact"
            used.add(m)
    # normalised (case / prefix / separators)
    tnorm: dict[str, list[str]] = {}
    for t in trial:
        if t not in used:
            tnorm.setdefault(_norm(t), []).append(t)
    for m in free_model():
        cands = [t for t in tnorm.get(_norm(m), []) if t not in used]
        if len(cands) == 1:
            pairs[m], how[m] = cands[0], "normalised"
            used.add(cands[0])
        elif len(cands) > 1:
            ambiguous[m] = tuple(cands)
    if aliases:
        tkey: dict[tuple, list[str]] = {}
        for t in trial:
            if t in used:
                continue
            k = landmark_key(t)
            if k is not None:
                tkey.setdefault(k, []).append(t)
        mkey: dict[tuple, list[str]] = {}
        for m in free_model():
            k = landmark_key(m)
            if k is not None:
                mkey.setdefault(k, []).append(m)
        for k, ms in mkey.items():
            ts = tkey.get(k, [])
            if len(ms) == 1 and len(ts) == 1:
                pairs[ms[0]], how[ms[0]] = ts[0], "alias"
                used.add(ts[0])
            elif ts:
                for m in ms:
                    ambiguous[m] = tuple(ts)
    ordered = {m: pairs[m] for m in model if m in pairs}
    return Match(
        pairs=ordered,
        unmatched_model=tuple(m for m in model if m not in pairs),
        unmatched_trial=tuple(t for t in trial if t not in used),
        how={m: how[m] for m in ordered},
        ambiguous={k: v for k, v in ambiguous.items() if k not in pairs},
    )
