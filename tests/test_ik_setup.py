"""OpenSim IK setup files -> kinfunc.ik.IKSetup."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from kinfunc.ik import CoordinateTask, IKSetup
from kinfunc.io import SetupError, load_ik_setup

from .shared import data as _shared


def test_gait2392_setup():
    path = _shared("opensim-gait2392/subject01_Setup_IK.xml")
    s = load_ik_setup(path)
    assert isinstance(s, IKSetup)
    # 31 marker tasks (all apply=true) and 4 coordinate tasks
    text = path.read_text()
    assert text.count("<IKMarkerTask") == 31 and text.count("<IKCoordinateTask") == 4
    assert len(s.marker_weights) == 31  # MANIFEST: 31 markers used
    assert s.marker_weights["R.ASIS"] == 10.0 and s.marker_weights["Top.Head"] == 0.1
    assert s.coordinate_tasks == {
        n: CoordinateTask(1000.0, None) for n in ("subtalar_angle_r", "mtp_angle_r", "subtalar_angle_l", "mtp_angle_l")
    }
    assert s.time_range == (0.5, 2.5)
    folder = path.parent
    assert Path(s.model_file) == folder / "subject01_simbody.osim" and Path(s.model_file).exists()
    assert Path(s.marker_file) == folder / "subject01_walk1.trc" and Path(s.marker_file).exists()
    assert Path(s.output_motion_file).parent == folder
    assert s.coordinate_file is None and s.accuracy == 1e-5


def test_gait10dof_setup():
    s = load_ik_setup(_shared("opensim-gait10dof/walk_Setup_IK.xml"))
    assert s.time_range == (0.0, 2.5)
    assert s.coordinate_tasks == {}
    assert math.isinf(s.constraint_weight)
    assert s.model_file.endswith("subject01.osim")  # as written ("../subject01.osim"), resolved


_TEMPLATE = """<?xml version="1.0" encoding="UTF-8" ?>
<OpenSimDocument Version="40000">
  <InverseKinematicsTool name="t">
    <model_file>models/m.osim</model_file>
    <IKTaskSet name="tasks">{taskset}</IKTaskSet>
    <marker_file>/abs/trial.trc</marker_file>
    <coordinate_file>{coordinate_file}</coordinate_file>
    <time_range>{time_range}</time_range>
    <output_motion_file>out.mot</output_motion_file>
  </InverseKinematicsTool>
</OpenSimDocument>
"""

_TASKS = """<objects>
  <IKMarkerTask name="A"><apply>true</apply><weight>2</weight></IKMarkerTask>
  <IKMarkerTask name="B"><apply>false</apply><weight>5</weight></IKMarkerTask>
  <IKMarkerTask name="C"><weight>0.5</weight></IKMarkerTask>
  <IKCoordinateTask name="knee"><apply>true</apply><weight>3</weight><value_type>manual_value</value_type><value>0.25</value></IKCoordinateTask>
  <IKCoordinateTask name="hip"><apply>true</apply><weight>4</weight><value_type>from_file</value_type></IKCoordinateTask>
  <IKCoordinateTask name="ankle"><apply>true</apply><weight>1</weight><value_type>default_value</value_type><value>9</value></IKCoordinateTask>
  <IKCoordinateTask name="off"><apply>false</apply><weight>1</weight></IKCoordinateTask>
</objects>"""


def _write(tmp_path: Path, taskset=_TASKS, coordinate_file="coords.mot", time_range="0.1 0.9") -> Path:
    p = tmp_path / "Setup_IK.xml"
    p.write_text(_TEMPLATE.format(taskset=taskset, coordinate_file=coordinate_file, time_range=time_range))
    return p


def test_value_types_apply_and_paths(tmp_path):
    s = load_ik_setup(_write(tmp_path))
    assert s.marker_weights == {"A": 2.0, "C": 0.5}  # apply=false dropped; apply defaults to true
    assert s.coordinate_tasks == {
        "knee": CoordinateTask(3.0, 0.25),
        "hip": CoordinateTask(4.0, None, from_file=True),
        "ankle": CoordinateTask(1.0, None),  # default_value ignores <value>: the model's default
    }
    assert s.time_range == (0.1, 0.9)
    assert s.model_file == str(tmp_path / "models" / "m.osim")
    assert s.marker_file == "/abs/trial.trc"
    assert s.coordinate_file == str(tmp_path / "coords.mot")
    assert s.output_motion_file == str(tmp_path / "out.mot")


def test_task_set_in_its_own_file(tmp_path):
    (tmp_path / "tasks.xml").write_text(
        f'<OpenSimDocument Version="40000"><IKTaskSet name="x">{_TASKS}</IKTaskSet></OpenSimDocument>'
    )
    p = tmp_path / "Setup_IK.xml"
    p.write_text(
        _TEMPLATE.format(taskset="", coordinate_file="c.mot", time_range="0 1").replace(
            '<IKTaskSet name="tasks"></IKTaskSet>', '<IKTaskSet file="tasks.xml" />'
        )
    )
    assert load_ik_setup(p).marker_weights == {"A": 2.0, "C": 0.5}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(coordinate_file="Unassigned"), "from_file but <coordinate_file> is unset"),
        (dict(time_range="2 1"), "start <= end"),
        (dict(time_range="a b"), "not two numbers"),
        (dict(taskset=_TASKS.replace("manual_value", "spline_value")), "value_type"),
        (dict(taskset=_TASKS.replace("<weight>2</weight>", "<weight>-1</weight>")), "negative"),
        (dict(taskset=_TASKS.replace("<weight>2</weight>", "<weight>x</weight>")), "not a number"),
        (dict(taskset=_TASKS.replace('IKMarkerTask name="C"', 'IKMarkerTask name="A"')), "given twice"),
    ],
)
def test_bad_setups_raise(tmp_path, kwargs, match):
    p = _write(tmp_path, **kwargs)
    with pytest.raises(SetupError, match=match) as e:
        load_ik_setup(p)
    assert str(p) in str(e.value) and isinstance(e.value, ValueError)


def test_not_a_setup_file(tmp_path):
    p = tmp_path / "x.xml"
    p.write_text("<OpenSimDocument><Model/></OpenSimDocument>")
    with pytest.raises(SetupError, match="InverseKinematicsTool"):
        load_ik_setup(p)
    with pytest.raises(SetupError, match="not found"):
        load_ik_setup(tmp_path / "nope.xml")
