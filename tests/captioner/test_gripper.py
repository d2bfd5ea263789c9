"""Gripper movements and the notes/captions they give events (pure, no I/O)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from wallwm.captioner.backends import _object_of, signal_caption
from wallwm.captioner.gripper import gripper_moves, gripper_names, gripper_notes, note_kinds
from wallwm.captioner.prompting import EventFacts
from wallwm.captioner.stage import _gripper_array


def lagged_grasp(closed_level: float = 0.38, settle: float = 0.44, t_len: int = 68) -> np.ndarray:
    """MetaWorld pick-place's opening: command at 24, fingers move 26-38, bounce, settle."""
    t = np.arange(t_len, dtype=np.float64)
    x = np.ones(t_len)
    ramp = (t >= 26) & (t <= 38)
    x[ramp] = 1.0 - (1.0 - closed_level) * (t[ramp] - 26) / 12
    x[t > 38] = settle + 0.01 * np.sin(t[t > 38])  # settles a little above the overshoot
    return x


def captions(gripper_TG: np.ndarray, cuts: list[int], instruction: str) -> list[str]:
    bounds = list(itertools.pairwise(cuts))
    out = []
    for i, (a, b) in enumerate(bounds):
        facts = EventFacts(
            event_id=f"e{i}",
            instruction=instruction,
            index=i,
            count=len(bounds),
            start_frame=a,
            end_frame=b,
            duration_s=(b - a) / 80,
            cues=(),
            previous_caption=None,
            signal_notes=gripper_notes(gripper_TG, a, b),
        )
        out.append(signal_caption(facts)["caption"])
    return out


def test_the_carry_after_a_lagged_grasp_is_not_a_second_grasp():
    # The regression: the fingers keep closing past the cut at 32, and the carry (32-68) was
    # captioned "grasp the puck" like the grasp itself.
    x = lagged_grasp()
    cuts = [0, 13, 24, 32, 68]
    assert [gripper_notes(x, a, b) for a, b in itertools.pairwise(cuts)] == [
        ("gripper open until a later grasp",),
        ("gripper open until a later grasp",),
        ("gripper closes",),
        ("gripper holds what it grasped",),
    ]
    assert captions(x, cuts, "Pick up the puck and place it at the goal") == [
        "reach toward the puck",
        "approach the puck to grasp it",
        "grasp the puck",
        "carry the puck",
    ]


def test_a_movement_belongs_to_the_event_holding_its_onset():
    x = lagged_grasp()
    (move,) = gripper_moves(x)  # the bounce from 0.38 back to 0.44 is not an opening
    assert move.kind == "close" and move.start == 26 and 26 < move.onset <= 28 and move.end == 38
    # a cut a frame after the fingers start moving still gives the grasp to one event only
    early, late = gripper_notes(x, 20, 27), gripper_notes(x, 27, 40)
    assert sorted([early, late]) == [("gripper closes",), ("gripper open until a later grasp",)]


def test_release_then_regrasp():
    x = np.concatenate([np.ones(10), np.linspace(1, 0.2, 6), np.full(14, 0.2)])
    x = np.concatenate([x, np.linspace(0.2, 1, 6), np.ones(10), np.linspace(1, 0.2, 6), [0.2] * 8])
    cuts = [0, 8, 20, 30, 40, 46, 60]
    assert captions(x, cuts, "pick up the red block") == [
        "reach toward the red block",
        "grasp the red block",
        "carry the red block",
        "release the red block",
        "approach the red block to grasp it",
        "grasp the red block",
    ]


def test_a_closing_at_the_very_start_is_a_preshape_not_a_grasp():
    # MetaWorld's button/door/window experts close the fingers at frame 0, on nothing.
    x = np.concatenate([np.linspace(1, 0.28, 15), np.full(67, 0.3)])
    assert gripper_notes(x, 0, 54) == ("gripper closes at the start",)
    assert gripper_notes(x, 54, 82) == ("gripper stays closed",)
    assert captions(x, [0, 54, 82], "press the button from the top") == [
        "reach toward the button",
        "finish the task",
    ]


@pytest.mark.parametrize(
    "x",
    [
        np.ones(50),
        1.0 - 0.0034 * (1 - np.exp(-np.arange(50) / 8)),  # reach-v3: drifts 0.3 % -- not a grasp
        np.full(50, np.nan),
        np.zeros(50),
        np.array([]),
    ],
)
def test_no_movement_no_gripper_note(x):
    assert gripper_notes(x, 0, 30) == ()
    assert gripper_moves(x) == []


def test_jitter_below_the_threshold_is_not_a_movement():
    rng = np.random.default_rng(0)
    x = lagged_grasp() + rng.normal(0, 0.01, 68)
    assert [m.kind for m in gripper_moves(x)] == ["close"]


def test_missing_readings_are_bridged():
    x = lagged_grasp()
    x[[5, 30, 31, 50]] = np.nan
    assert [m.kind for m in gripper_moves(x)] == ["close"]
    assert gripper_notes(x, 24, 32) == ("gripper closes",)
    assert gripper_notes(x, 32, 68) == ("gripper holds what it grasped",)


def test_each_gripper_of_a_bimanual_robot_gets_its_own_note():
    left, right = lagged_grasp(), np.ones(68)
    right[50:] = np.linspace(1, 0.3, 18)
    g_TG = np.stack([left, right], axis=1)
    notes = gripper_notes(g_TG, 32, 50)
    assert notes == ("gripper 1 holds what it grasped", "gripper 2 open until a later grasp")
    assert note_kinds(notes) == {"holds what it grasped", "open until a later grasp"}
    assert gripper_notes(g_TG, 50, 68) == ("gripper 1 holds what it grasped", "gripper 2 closes")
    assert captions(g_TG, [0, 24, 32, 50, 68], "fold the towel")[2:] == [
        "carry the towel",
        "grasp the towel",
    ]


def test_grippers_named_after_their_action_dims():
    names = ["left_waist", "left_gripper", "right_waist", "right_gripper"]
    assert gripper_names(names, 2) == ["left gripper", "right gripper"]
    assert gripper_names(["x", "gripper"], 1) == ["gripper"]
    # no names, a count that does not match, or names that repeat: numbered
    assert gripper_names(None, 2) == ["gripper 1", "gripper 2"]
    assert gripper_names(["left_gripper"], 2) == ["gripper 1", "gripper 2"]
    assert gripper_names(["gripper", "gripper"], 2) == ["gripper 1", "gripper 2"]
    left, right = lagged_grasp(), np.ones(68)
    right[50:] = np.linspace(1, 0.3, 18)
    notes = gripper_notes(np.stack([left, right], axis=1), 50, 68, gripper_names(names, 2))
    assert notes == ("left gripper holds what it grasped", "right gripper closes")
    assert note_kinds(notes) == {"holds what it grasped", "closes"}
    assert note_kinds(["gripper closes at the start", "main gripper stays closed"]) == {
        "closes at the start",
        "stays closed",
    }


def test_stored_gripper_column_to_array():
    assert _gripper_array(None) is None and _gripper_array([]) is None
    out = _gripper_array([[1.0, 0.5], None, [0.2, None]])
    assert out.shape == (3, 2)
    np.testing.assert_array_equal(np.isnan(out), [[False, False], [True, True], [False, True]])


@pytest.mark.parametrize(
    ("instruction", "obj"),
    [
        ("Slide the window closed", "window"),
        ("Pick up the puck and place it at the goal", "puck"),
        ("open the top drawer", "top drawer"),
    ],
)
def test_object_of_the_instruction(instruction, obj):
    assert _object_of(instruction) == obj
