"""Segmenter configuration, inputs and results (see :mod:`wallwm.pipeline.segmentation`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from wallwm.pipeline.sources.base import no_dims

FloatArray = npt.NDArray[np.float64]
#: A segment cost: ``cost(starts, end)`` for the segments ``[starts_i, end)``.
CostFn = Callable[[npt.NDArray[np.int64], "int | npt.NDArray[np.int64]"], FloatArray]
CUES = ("action_change", "gripper", "hold", "state_motion", "visual", "speed_min", "direction")


class SegmentConfig(BaseModel):
    """Segmenter parameters (``wallwm segment`` options)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    method: Literal["events", "fixed"] = "events"
    chunk_len: int = Field(16, ge=1, description="Frames per chunk for method=fixed.")
    weights: dict[str, float] = Field(
        default_factory=lambda: {
            "action_change": 1.0,
            "gripper": 1.0,
            "state_motion": 0.0,
            "visual": 0.0,
        },
        description="Weight of each channel group in the change-point cost (0 disables it).",
    )
    action_model: Literal["auto", "state_feedback", "time", "smooth"] = Field(
        "auto",
        description="Within an event, actions are affine in the paired proprio state "
        "(state_feedback: a closed-loop controller steering to a sub-goal), a line in time "
        "(time: an open-loop interpolation between waypoints) or a polynomial in time plus "
        "feedback on the paired state, if any is paired (smooth: a person's reach -- its speed "
        "rising and falling within the event -- tracked by the robot's controller); auto: "
        "chosen per "
        "dataset from the data (see wallwm.pipeline.segmentation.selection).",
    )
    state_pairing: Literal["auto", "index"] | list[int] = Field(
        "auto",
        description="Which proprio state each action dim is affine in (state_feedback): one "
        "state index per action dim (-1: a line in time); index: action dim j with state dim j; "
        "auto: each action dim with the state that explains it best within events, chosen per "
        "dataset from the data (see wallwm.pipeline.segmentation.selection).",
    )
    quiet_dims: Literal["auto"] | list[int] = Field(
        "auto",
        description="Action dims left out of the cut: commands that are noise alone over the "
        "dataset (a channel no one commands, a sensor's jitter) carry no event but would make "
        "every event pay for their parameters. auto: the dims whose commands show no "
        "frame-to-frame persistence over the model choice's sample (see "
        "wallwm.pipeline.segmentation.selection.quiet_dims).",
    )
    noise_model: Literal["auto", "differences", "local_fit", "position_targets"] = Field(
        "auto",
        description="Each channel's noise: the spread of its first differences, floored at "
        "`resolution` x its range (differences), the residual the within-event model leaves "
        "on short windows (local_fit), or that residual scaled to what the law leaves over a "
        "whole event of a reached path (position_targets); auto: local_fit for the line in "
        "time, position_targets for state feedback on commands that move with their states, "
        "differences otherwise.",
    )
    action_form: Literal["auto", "values", "rates"] = Field(
        "auto",
        description="What the cut reads of each command: its values as recorded, or its rates "
        "of change (first differences x fps: a position target bends at a decision without "
        "a jump, its rate steps there); auto: rates for position targets whose rates stand "
        "clear of their noise, values otherwise (see wallwm.pipeline.segmentation.forms).",
    )
    penalty: float = Field(0.85, gt=0, description="Multiplier of the BIC penalty per event.")
    merge_bends: bool = Field(
        True,
        description="Drop boundaries where the command only bends against the state "
        "(saturation knees) instead of jumping.",
    )
    shared_gain: bool = Field(
        True,
        description="Let each command of a state-feedback event keep the episode's gain (its "
        "line's slope on the paired state, pooled over the events) and pay for a slope of its "
        "own only where it needs one: a controller that switches sub-goal keeps its gain, so "
        "a new event costs one parameter per command, not two; not for position targets "
        "(see wallwm.pipeline.segmentation.gains).",
    )
    merge_disturbances: bool = Field(
        True,
        description="Drop the boundaries of hesitations and small corrections: short runs of "
        "events after which the motion continues the one before, and a closed-loop arm's "
        "pauses (an abrupt stop its own law did not ask for), for the line models "
        "(state_feedback, time); a person's stops after which the move carries on are taken "
        "out of the signals before the smooth model cuts (and before the model choice).",
    )
    continuous_rotations: bool = Field(
        True,
        description="Read angles that wrapped around (past +-pi or +-180) and unit "
        "quaternions whose sign flipped as the continuous rotations they are, so a turn past "
        "the edge is no event (see wallwm.pipeline.segmentation.rotations); the stored "
        "commands stay as recorded.",
    )
    read_held_samples: bool = Field(
        True,
        description="Cut a command stream held over several frames (slower than the frames: "
        "repeated exactly, then stepping to its next sample) on its own samples, so its "
        "stairs are no events, and read a row a late recorder stored again (every signal as "
        "in the frame before, for one or two frames) as a missed sample, and frames a "
        "recorder dropped (gaps in the timestamps) on the time axis "
        "(see wallwm.pipeline.segmentation.held and .gaps).",
    )
    mend_glitches: bool = Field(
        True,
        description="Read a command that is off its neighbours for one frame only (a device "
        "or packet glitch: far from the frames either side, which agree) as their mean, "
        "where a model in time reads the commands (see wallwm.pipeline.segmentation.glitches).",
    )
    refit_noise: bool = Field(
        True,
        description="Re-estimate each channel's noise from the residuals of a first cut (never "
        "below the first-difference estimate) and cut again.",
    )
    min_event_s: float = Field(0.0, ge=0, description="Shortest event (at least one frame).")
    max_event_s: float = Field(30.0, gt=0, description="Longer events are split.")
    window_s: float = Field(0.1, gt=0, description="Half-window of the pause/turn cues.")
    resolution: float = Field(
        0.2,
        gt=0,
        description="Smallest change that matters, as a fraction of a channel's range "
        "(noise_model=differences).",
    )

    def resolved(self) -> bool:
        """Whether every model choice is made (no ``auto`` left)."""
        return (
            self.action_model != "auto"
            and self.noise_model != "auto"
            and self.state_pairing != "auto"
            and self.quiet_dims != "auto"
            and self.action_form != "auto"
        )

    def left_out(self) -> list[int]:
        """The action dims the cut leaves out (none while ``quiet_dims`` is still ``auto``)."""
        return self.quiet_dims if isinstance(self.quiet_dims, list) else []

    def pairing(self) -> list[int] | None:
        """The chosen state index per action dim, or None for pairing by index."""
        return self.state_pairing if isinstance(self.state_pairing, list) else None


@dataclass
class Signals:
    """The per-frame signals of one episode that the cues are computed from.

    Shapes: ``actions_TA`` (T, A); ``states_TS`` (T, S) or None; ``gripper_TG`` (T, G) or None;
    ``motion_T`` (T,) mean absolute frame difference of the downscaled video, or None.
    """

    actions_TA: npt.NDArray[np.floating]
    fps: float
    states_TS: npt.NDArray[np.floating] | None = None
    gripper_TG: npt.NDArray[np.floating] | None = None
    motion_T: npt.NDArray[np.floating] | None = None
    #: Indices of action dims that are gripper commands (grouped with the gripper cue).
    gripper_action_dims: list[int] = field(default_factory=list)
    #: Each frame's time (T,), where the source stores it: frames a recorder dropped leave
    #: gaps, which the models in time read on the time axis (:mod:`.gaps`).
    timestamps_s: npt.NDArray[np.floating] | None = None

    def __post_init__(self) -> None:
        # A source may store a state or gripper vector of no dims: the same as none.
        if no_dims(self.states_TS):
            self.states_TS = None
        if no_dims(self.gripper_TG):
            self.gripper_TG = None


@dataclass(frozen=True)
class Boundary:
    """One chosen boundary: the frame where a new event starts."""

    frame: int
    confidence: float
    cues: tuple[str, ...]


@dataclass(frozen=True)
class Segmentation:
    """The result for one episode: events as half-open frame ranges, and the cue traces.

    ``score_T`` is the local boundary strength at every frame (cost reduction of a split in a
    window around it, in penalty units, squashed to [0, 1)); ``cues_CT`` the per-group traces.
    """

    starts: list[int]
    ends: list[int]
    boundaries: list[Boundary]
    score_T: FloatArray
    cues_CT: dict[str, FloatArray]
    #: What the cut read differently from the stored signals (``forms.READING_KINDS``'s keys:
    #: a recorder's wrapped angles, held streams, rows stored twice).
    reading: tuple[str, ...] = ()
