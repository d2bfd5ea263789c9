"""Prompt building, schema, parsing and signal captions (no I/O)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from wallwm.captioner.backends import SignalsBackend, signal_caption
from wallwm.captioner.gripper import gripper_notes
from wallwm.captioner.parsing import CaptionParseError, parse_caption, reask_message
from wallwm.captioner.prompting import EventFacts, build_request, load_prompt
from wallwm.captioner.schema import caption_json_schema

GOOD = {
    "caption": "grasp the red puck",
    "verb": "grasp",
    "object": "red puck",
    "target": None,
    "done_state": "the puck is held",
}


def jpeg(value: int) -> bytes:
    return cv2.imencode(".jpg", np.full((16, 16, 3), value, np.uint8))[1].tobytes()


def facts(**kw):
    base = {
        "event_id": "e1",
        "instruction": "pick up the red puck and place it at the goal",
        "index": 1,
        "count": 4,
        "start_frame": 10,
        "end_frame": 30,
        "duration_s": 0.25,
        "cues": ("action_change", "gripper"),
        "previous_caption": "reach the red puck",
        "keyframes": (
            ("top", "first", jpeg(10)),
            ("top", "middle", jpeg(20)),
            ("top", "last", jpeg(30)),
            ("wrist", "first", jpeg(40)),
        ),
    }
    base.update(kw)
    return EventFacts(**base)


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(GOOD),
        "```json\n" + json.dumps(GOOD) + "\n```",
        "Sure! Here is the caption:\n" + json.dumps(GOOD) + "\nHope this helps.",
        json.dumps(GOOD)[:-1],  # truncated right before the closing brace
        json.dumps({**GOOD, "extra": 1}),
    ],
)
def test_parse_tolerates_fences_prose_and_truncation(text):
    cap = parse_caption(text)
    assert cap.caption == "grasp the red puck" and cap.target is None


def test_parse_repairs_a_cut_off_last_field_only_if_the_rest_is_complete():
    cut = json.dumps(GOOD).replace('"the puck is held"}', '"the puck is')
    with pytest.raises(CaptionParseError, match="done_state"):
        parse_caption(cut)  # the truncated field is dropped, and it is required
    with pytest.raises(CaptionParseError, match="truncated"):
        parse_caption('{"caption": "grasp the')


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "empty"),
        ("no json here", "no JSON object"),
        ("[1, 2]", "no JSON object"),
        ('{"caption": "x"}', "schema violations"),
        ('{"caption": 5, "verb": }', "invalid JSON"),
    ],
)
def test_parse_rejects_with_a_reason(text, reason):
    with pytest.raises(CaptionParseError, match=reason):
        parse_caption(text)


def test_schema_is_closed_and_bounded():
    schema = caption_json_schema()
    assert schema["additionalProperties"] is False and set(schema["required"]) == set(GOOD)
    assert all("maxLength" not in p for p in schema["properties"].values())  # xgrammar limit
    with pytest.raises(CaptionParseError):
        parse_caption(json.dumps({**GOOD, "caption": "x" * 200}))


def test_prompt_template_and_request():
    tpl = load_prompt("event_v1")
    assert tpl.version.startswith("event_v1@") and "JSON" in tpl.system
    req = build_request(facts(), tpl, max_images=3)
    assert req.event_id == "e1" and len(req.images) == 3  # first camera only
    assert "event 2 of 4" in req.user and '"reach the red puck"' in req.user
    assert "pick up the red puck" in req.user and "gripper" in req.user
    msgs = req.messages()
    assert msgs[0]["role"] == "system" and msgs[1]["content"][0]["image_url"]["url"].startswith(
        "data:image/jpeg;base64,"
    )
    grid = build_request(facts(), tpl, grid=True)
    assert len(grid.images) == 1 and "grid" in grid.user
    first = build_request(facts(index=0, previous_caption=None), tpl)
    assert "none (first event)" in first.user
    with pytest.raises(ValueError, match="available"):
        load_prompt("nope")


def test_reask_message_names_the_problem():
    assert "schema violations" in reask_message(CaptionParseError("schema violations: x"))


def test_gripper_notes_and_signal_captions():
    opening = np.concatenate([np.ones(10), np.linspace(1, 0, 5), np.zeros(10)])
    assert gripper_notes(opening, 8, 16) == ("gripper closes",)
    assert gripper_notes(opening[::-1].copy(), 8, 16) == ("gripper opens",)
    assert gripper_notes(opening, 0, 8) == ("gripper open until a later grasp",)
    cap = signal_caption(facts(signal_notes=("gripper closes",)))
    assert cap["caption"] == "grasp the red puck" and cap["verb"] == "grasp"
    out = SignalsBackend().generate([])
    assert out == []


def test_parse_respects_escapes_and_braces_inside_strings():
    from wallwm.captioner.parsing import _first_object

    body = (
        '{"caption": "grasp the red puck", "verb": "grasp", "object": "a {puck}", '
        '"target": null, "done_state": "it says \\"held\\" }"}'
    )
    assert _first_object("noise " + body + " trailing") == (body, True)
    with pytest.raises(CaptionParseError, match="done_state"):  # quotes are outside the schema
        parse_caption(body)
    cap = parse_caption(body.replace('\\"held\\" ', "held "))
    assert cap.object == "a {puck}" and cap.done_state == "it says held }"
