"""Event segmentation at the event joints: pure functions, no I/O, no Ray.

Modules: :mod:`.config` (options, inputs, results), :mod:`.channels` (cue channels and their
noise), :mod:`.changepoints` (costs, PELT), :mod:`.gains` (a controller's shared gain),
:mod:`.bends` (bends and residual noise),
:mod:`.disturbances` and :mod:`.hesitations` (what is no event), :mod:`.selection` (the model
choice), :mod:`.forms` (values or rates; what the cut reads), :mod:`.rotations` (wrapped
angles and quaternion signs made continuous), :mod:`.held` (a command stream slower than the
frames), :mod:`.cues` (pause/turn cues), :mod:`.segment` (one
episode), :mod:`.stage` (the Ray stage over a dataset), :mod:`.evaluate` (boundary metrics).

The episode's signals are grouped into cue channels, each scaled to unit noise using noise
estimated from the episode itself (robust spread of first differences, ignoring held/clipped
values), so the same defaults carry over to other robots, rates and tasks:

- ``action_change``: the (non-gripper) action stream -- a controller switching sub-goal;
- ``gripper``: graded gripper command dims of the action, or the measured gripper opening where
  the action has no gripper command (the opening is the command's delayed response: it settles,
  or stops at an object, without any decision being taken). A binary (open/close) command is
  cut exactly where it switches and is no channel of the cost, so other cuts do not pay for
  re-fitting its constant level;
- ``state_motion``: end-effector/joint velocity from the proprio states;
- ``visual``: how much the camera sees moving (downscaled frame differences).

Boundaries are the optimal multiple change points of a piecewise-*linear* Gaussian model of the
weighted channels (exact: optimal partitioning over a dense cost matrix for short episodes,
PELT for long ones): a new event costs a BIC-style
penalty ``penalty * (2D + 1) * log T`` and pays for itself only if it explains the signals
better. Within an event each action dim is modelled as affine in its paired proprio state
(``action_model="state_feedback"``, the default): a closed-loop controller steering to a fixed
sub-goal commands ``gain * (goal - state)``, so its commands drift as it nears the goal, or
stall when the robot is blocked at a contact, while the *line* relating command to state stays
the same -- only a new sub-goal (an event) moves it. Without paired states, or with
``action_model="time"``, the model is a line in time per dim, which also absorbs a controller's
smooth deceleration. A person's reaching (teleoperation) fits neither: its speed rises and
falls within every move, and a decision re-plans the move without a jump, so with
``action_model="smooth"`` each dim is a polynomial in time per event (degree
``SMOOTH_DEGREE``, :class:`~.changepoints.PolynomialCost`), plus feedback on its paired state
where the dataset's choice finds it pays (the robot's controller tracking the person's
reference, which a contact holds back), priced by its own parameter count.
``auto`` (the default) chooses among the three per dataset (:mod:`.selection`), and leaves
out of the cut the action dims whose commands are noise alone over the dataset (``quiet_dims``:
no frame-to-frame persistence in any sampled episode), which carry no event but would make
every event pay for their parameters.
Position targets (the positions an arm reaches) bend at a decision without a jump; where their
rates of change stand clear of their noise, the cut reads the rates, on which each bend is a
step (``action_form``, :mod:`.forms`). Angles that wrapped past a turn's edge and quaternions
whose sign flipped are read continuous before anything else (``continuous_rotations``,
:mod:`.rotations`): a turn past the edge is no event. A command stream held over several
frames (slower than the frames) is cut on its own samples by the models in time
(``read_held_samples``, :mod:`.held`): its stairs are no events.
A closed-loop controller keeps its gain when it switches sub-goal: each command of each event
takes the episode's gain (its slope on the state, read off a first cut) and fits only its
intercept, or pays one more parameter's price for a slope of its own (``shared_gain``,
:mod:`.gains`), so a new sub-goal costs one parameter per command, not two.
A boundary where the state-feedback line only *bends* -- the command stays continuous in the
state while its slope changes, as when an actuator leaves or enters saturation at its command
limit -- is no event: where a continuous two-piece line per dim (its knee at the boundary, or
anywhere in the two events for one more parameter) explains the signals within the BIC price of
the parameters a cut adds, the boundary is dropped (``merge_bends``) -- unless the commands that
change there earn it alone (each judged by itself, changing or continuing across it; a new
sub-goal moves one or two commands while the others carry on), each one's evidence weighed at
its residual's persistence.
A run of short events within 0.6 s whose surroundings continue each other is a hesitation or
a small correction, and a closed-loop arm's abrupt stop its law did not ask for is a pause: their
cuts go (``merge_disturbances``, :mod:`.disturbances`). The smooth model cannot continue a line
over a stop: a person's hesitations -- abrupt stops after which the move carries on the way it was
going -- are taken out of its signals before it cuts (:mod:`.hesitations`).
Where every moving command freezes exactly for good (at least 0.2 s to the end) the robot holds:
always a cut, cue ``hold`` (:func:`.idle.final_hold_start`), however small the change into it
(the cost's own cut within 0.05 s of the freeze stands for it).
The noise each channel is scaled by is then re-estimated from the residuals the chosen events
leave (never below the first-difference level) and the episode is cut again
(``refit_noise``): slowly drifting noise -- a hand's tremor, lag no line follows -- is invisible
frame to frame but would otherwise pay for cuts of its own.
Each boundary's confidence is its cost reduction relative to the penalty; its cues are the
channel groups that contributed to that reduction, plus ``speed_min`` / ``direction`` when the
end effector pauses or turns there. Events shorter than ``min_event_s`` are impossible by
construction; events longer than ``max_event_s`` are split at their strongest interior point.

``method="fixed"`` cuts every ``chunk_len`` frames through the same code path (the chunk baseline).
"""

from wallwm.pipeline.segmentation.config import (
    CUES,
    Boundary,
    Segmentation,
    SegmentConfig,
    Signals,
)
from wallwm.pipeline.segmentation.segment import WeighedCuts, event_penalty, segment, weigh_cuts

__all__ = [
    "CUES",
    "Boundary",
    "SegmentConfig",
    "Segmentation",
    "Signals",
    "WeighedCuts",
    "event_penalty",
    "segment",
    "weigh_cuts",
]
