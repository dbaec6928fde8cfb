"""The synthetic sample's action vocabulary: atomic actions as values on cue axes.

Each AVA label type is one independent cue axis, drawn on its own part of the actor
(`render.py` draws them), and each atomic action is one value on one axis:

    PERSON_MOVEMENT      body texture      12 stand: still; 5 fall down: drifts down;
                                           6 get up: drifts up (the 8 frames of a clip
                                           show the direction)
    PERSON_INTERACTION   lamp on the head  80 watch: steady; 69 hand wave: blinks at
                                           1 Hz; 79 talk to: blinks at 3 Hz (one clip
                                           tells 3 Hz apart; steady and 1 Hz take
                                           several clips)
    OBJECT_MANIPULATION  badge on chest    17 carry/hold: red; 59 touch: blue, shown in
                                           the first second of a segment only, then a
                                           grey badge for both (memory needed)

Every actor-second carries one value of every axis, so a combined label has three ids
(``5+17+69``), 18 labels in all. Held-out labels are thus new combinations of values
that training labels show one by one: a similarity learned per axis transfers. Each
value occurs in at least six labels, so holding out up to five labels (the small
settings hold out four: `--num-val-labels 2 --num-test-labels 2`) always leaves a
training label with each action of every held-out label, as long as that label keeps
two tubelets in the training videos (the default sample's do).

Pure data: `render.py` says how each cue is drawn, `scene.py` when actors hold which set.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

MOVEMENT = "PERSON_MOVEMENT"
OBJECT = "OBJECT_MANIPULATION"
INTERACTION = "PERSON_INTERACTION"
AXES = (MOVEMENT, OBJECT, INTERACTION)
EARLY_SECONDS = 1  # how long a segment shows its first-second-only cues


@dataclass(frozen=True)
class Action:
    """One atomic action: one value (`cue`, drawn by `render.py`) on one cue axis.

    `axis` is the AVA label type. `evidence` says what it takes to tell the action from
    the other values of its axis: ``"clip"`` (the 8 frames of one clip), ``"clips"``
    (several clips) or ``"first second"`` (only a segment's first second shows it).
    """

    action_id: int
    name: str
    axis: str
    cue: str
    evidence: str

    @property
    def label_type(self) -> str:
        """AVA's label type, written to the action list."""
        return self.axis


ACTIONS: tuple[Action, ...] = (
    Action(12, "stand", MOVEMENT, "still", "clip"),
    Action(5, "fall down", MOVEMENT, "drift_down", "clip"),
    Action(6, "get up", MOVEMENT, "drift_up", "clip"),
    Action(17, "carry/hold (an object)", OBJECT, "red", "first second"),
    Action(59, "touch (an object)", OBJECT, "blue", "first second"),
    Action(80, "watch (a person)", INTERACTION, "steady", "clips"),
    Action(69, "hand wave", INTERACTION, "blink_1hz", "clips"),
    Action(79, "talk to (e.g., self, a person, a group)", INTERACTION, "blink_3hz", "clip"),
)
ACTIONS_BY_ID: dict[int, Action] = {a.action_id: a for a in ACTIONS}


def combined_label(actions) -> str:
    """Combined label of an action set: sorted ids joined by '+' (SPEC §1 step 1)."""
    return "+".join(str(a) for a in sorted(actions))


def vocabulary(axis: str, chosen: tuple[int, ...] = ()) -> list[Action]:
    """The actions on `axis`, restricted to the ids in `chosen` unless it is empty."""
    return [a for a in ACTIONS if a.axis == axis and (not chosen or a.action_id in chosen)]


def label_sets(chosen: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every action set an actor can hold: one action of each axis that has any in
    `chosen` (all when empty), as sorted ids."""
    axes = [actions for actions in (vocabulary(axis, chosen) for axis in AXES) if actions]
    return sorted(tuple(sorted(a.action_id for a in combo)) for combo in itertools.product(*axes))
