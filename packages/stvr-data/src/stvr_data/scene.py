"""Synthetic scenes: who is where, doing what, and when. Pure data, no pixels, no files.

A scene is a fixed background with a few actors. Each actor keeps one `person_id`,
one look (shape, texture, colours) and a box that follows a smooth track; over time it
does a sequence of *segments*, each a set of atomic actions held for a few seconds.
Every actor-second has exactly one pose action (AVA's PERSON_MOVEMENT kind) and at
most one extra action, so an actor carries one or two labels at a time and linking its
seconds gives several tubelets with combined labels such as ``12+69``.

The actions borrow real AVA ids and names so that the labels read like AVA's, but what
they look like is synthetic (see `render.py` for the drawing of each cue). Half of them
can only be told apart over more than one 8-frame clip at 24 fps (1/3 s): a texture
that drifts slowly up or down, a badge that blinks or cycles its colour with a period
of about one second, a disc that pulses. The others are appearance-only.

Times: an actor exists from the scene's ``onset`` (video seconds) for ``seconds``
seconds. Inside this module time is *elapsed* seconds since the onset (``tau``); the
keyframe at elapsed second ``k`` is video second ``onset + k``. Boxes are normalised
``[x1, y1, x2, y2]`` (AVA order) of the actor's drawn extent at that instant.

`make_scene` draws everything from a numpy Generator, so a seeded Generator gives the
same scene every time; the AVA sample (`sample.py`) and other layouts reuse it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stvr_data.errors import StvrDataError

POSE = "pose"
EXTRA = "extra"
SHAPES = ("person", "ellipse", "rect")
# Every pattern has horizontal structure, so a vertical texture drift is always visible.
PATTERNS = ("hstripes", "checker", "diagonal")


class SceneConfigError(StvrDataError):
    """A synthetic-data setting that cannot produce a valid scene; names the field."""


@dataclass(frozen=True)
class Action:
    """One atomic action of the synthetic vocabulary.

    `cue` names how `render.py` draws it; `temporal` is True when one 8-frame clip
    (1/3 s) is not enough to tell it from another action (periodic or directional).
    `weight` is its relative frequency within its `group`.
    """

    action_id: int
    name: str
    label_type: str
    group: str
    cue: str
    weight: float
    temporal: bool


ACTIONS: tuple[Action, ...] = (
    Action(5, "fall down", "PERSON_MOVEMENT", POSE, "drift_down", 0.2, True),
    Action(6, "get up", "PERSON_MOVEMENT", POSE, "drift_up", 0.2, True),
    Action(11, "sit", "PERSON_MOVEMENT", POSE, "lowered", 0.25, False),
    Action(12, "stand", "PERSON_MOVEMENT", POSE, "still", 0.35, False),
    Action(17, "carry/hold (an object)", "OBJECT_MANIPULATION", EXTRA, "badge", 0.25, False),
    Action(69, "hand wave", "PERSON_INTERACTION", EXTRA, "badge_blink", 0.25, True),
    Action(79, "talk to (e.g., self, a person, a group)", "PERSON_INTERACTION", EXTRA, "pulse", 0.25, True),
    Action(80, "watch (a person)", "PERSON_INTERACTION", EXTRA, "badge_hue", 0.25, True),
)
ACTIONS_BY_ID: dict[int, Action] = {a.action_id: a for a in ACTIONS}


@dataclass(frozen=True)
class SceneConfig:
    """How a synthetic scene is drawn at random. Sizes are fractions of the frame.

    `speed` is the actors' speed in frame widths per second (each segment draws a
    direction and 70-100% of it). The default, 0.05 (16 px/s at 320 px, one stride-16
    feature cell per second), moves a box far enough that one second's features do not
    line up with the next, while the keyframe box still overlaps the actor by IoU > 0.5
    at the last clip it labels (2/3 s later). `moving=False` keeps every actor still.
    """

    width: int = 320
    height: int = 240
    actors: int = 3
    seconds: int = 30
    moving: bool = True
    speed: float = 0.05
    segment_seconds: tuple[int, int] = (2, 6)
    extra_probability: float = 0.5
    actor_width: tuple[float, float] = (0.13, 0.2)
    actor_height: tuple[float, float] = (0.4, 0.6)
    period: tuple[float, float] = (0.8, 1.25)
    actions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.actions) - set(ACTIONS_BY_ID)
        if unknown:
            raise SceneConfigError(f"SceneConfig.actions: unknown action ids {sorted(unknown)}")
        checks = {
            "width": self.width >= 32 and self.width % 2 == 0,
            "height": self.height >= 32 and self.height % 2 == 0,
            "actors": self.actors >= 1,
            "seconds": self.seconds >= 1,
            "speed": 0.0 <= self.speed <= 1.0,
            "segment_seconds": 1 <= self.segment_seconds[0] <= self.segment_seconds[1],
            "extra_probability": 0.0 <= self.extra_probability <= 1.0,
            "actor_width": 0.0 < self.actor_width[0] <= self.actor_width[1] <= 0.5,
            "actor_height": 0.0 < self.actor_height[0] <= self.actor_height[1] <= 0.9,
            "period": 0.0 < self.period[0] <= self.period[1],
        }
        for name, ok in checks.items():
            if not ok:
                raise SceneConfigError(f"SceneConfig.{name}: invalid value {getattr(self, name)!r}")
        # Neighbouring segments must differ, so at least two action sets must exist.
        if _possible_sets(self) < 2:
            raise SceneConfigError(f"SceneConfig.actions: {self.actions!r} allows fewer than two action "
                                   "sets (needs a pose, and a second pose or an extra action)")


@dataclass(frozen=True)
class Segment:
    """Elapsed seconds ``[start, end)`` during which an actor holds one action set."""

    start: int
    end: int
    actions: tuple[int, ...]


@dataclass(frozen=True)
class Actor:
    """One synthetic person: look, track and what it does.

    `centres` holds the box centre (normalised x, y) at elapsed seconds 0..seconds
    inclusive; between two seconds the box moves on a straight line. `period` (s) and
    `phase` (fraction of a period) time the periodic cues, so that two actors doing
    the same periodic action are not in lockstep.
    """

    person_id: int
    shape: str
    pattern: str
    colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    size: tuple[float, float]
    centres: tuple[tuple[float, float], ...]
    segments: tuple[Segment, ...]
    period: float
    phase: float


@dataclass(frozen=True)
class Scene:
    """A video's content: actors exist during video seconds ``[onset, onset + seconds)``."""

    video_id: str
    width: int
    height: int
    onset: int
    seconds: int
    actors: tuple[Actor, ...]
    background_seed: int

    @property
    def keyframes(self) -> range:
        """Video seconds of the annotated keyframes."""
        return range(self.onset, self.onset + self.seconds)


def combined_label(actions) -> str:
    """Combined label of an action set: sorted ids joined by '+' (SPEC §1 step 1)."""
    return "+".join(str(a) for a in sorted(actions))


def vocabulary(config: SceneConfig, group: str) -> list[Action]:
    """The actions of `group` (POSE or EXTRA) that scenes drawn with `config` use."""
    return [a for a in ACTIONS if a.group == group and (not config.actions or a.action_id in config.actions)]


def _possible_sets(config: SceneConfig) -> int:
    poses, extras = len(vocabulary(config, POSE)), len(vocabulary(config, EXTRA))
    with_extra = extras if config.extra_probability > 0 else 0
    without = 1 if config.extra_probability < 1 or extras == 0 else 0
    return poses * (with_extra + without)


def random_action_set(rng: np.random.Generator, config: SceneConfig,
                      avoid: tuple[int, ...] = ()) -> tuple[int, ...]:
    """One pose plus, with `extra_probability`, one extra action; never equal to `avoid`."""
    poses, extras = vocabulary(config, POSE), vocabulary(config, EXTRA)
    while True:
        chosen = [_weighted_choice(rng, poses).action_id]
        if rng.random() < config.extra_probability and extras:
            chosen.append(_weighted_choice(rng, extras).action_id)
        actions = tuple(sorted(chosen))
        if actions != avoid:
            return actions


def _weighted_choice(rng: np.random.Generator, actions: list[Action]) -> Action:
    weights = np.array([a.weight for a in actions])
    return actions[int(rng.choice(len(actions), p=weights / weights.sum()))]


def random_segments(rng: np.random.Generator, config: SceneConfig) -> tuple[Segment, ...]:
    """Consecutive segments covering elapsed seconds ``[0, config.seconds)``.

    Two neighbouring segments always differ in their action set, so that each one
    links into its own tubelet.
    """
    low, high = config.segment_seconds
    segments: list[Segment] = []
    start, previous = 0, ()
    while start < config.seconds:
        end = min(start + int(rng.integers(low, high + 1)), config.seconds)
        previous = random_action_set(rng, config, avoid=previous)
        segments.append(Segment(start, end, previous))
        start = end
    return tuple(segments)


def random_track(rng: np.random.Generator, config: SceneConfig, size: tuple[float, float],
                 segments: tuple[Segment, ...]) -> tuple[tuple[float, float], ...]:
    """Box centres at elapsed seconds 0..seconds, bouncing off the frame's edges.

    Each segment draws a new direction; vertical motion is halved (people mostly move
    sideways). The centre stays where the whole box is 1% inside the frame.
    """
    lo = np.array([size[0] / 2 + 0.01, size[1] / 2 + 0.01])
    hi = 1.0 - lo
    centre = lo + rng.random(2) * (hi - lo)
    centres = [centre.copy()]
    for segment in segments:
        velocity = _segment_velocity(rng, config)
        for _ in range(segment.start, segment.end):
            centre, velocity = _bounce(centre + velocity, velocity, lo, hi)
            centres.append(centre.copy())
    return tuple((float(x), float(y)) for x, y in centres)


def _segment_velocity(rng: np.random.Generator, config: SceneConfig) -> np.ndarray:
    """Normalised (dx, dy) per second at 70-100% of `speed` pixels, in a random direction."""
    angle = rng.uniform(0.0, 2.0 * math.pi)
    pixels = config.speed * config.width * rng.uniform(0.7, 1.0)
    if not config.moving:
        return np.zeros(2)
    return np.array([pixels * math.cos(angle) / config.width,
                     0.5 * pixels * math.sin(angle) / config.height])


def _bounce(centre: np.ndarray, velocity: np.ndarray, lo: np.ndarray,
            hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror a centre that left ``[lo, hi]`` back inside and reverse that velocity axis."""
    centre, velocity = centre.copy(), velocity.copy()
    for axis in range(2):
        if centre[axis] < lo[axis]:
            centre[axis], velocity[axis] = 2 * lo[axis] - centre[axis], -velocity[axis]
        elif centre[axis] > hi[axis]:
            centre[axis], velocity[axis] = 2 * hi[axis] - centre[axis], -velocity[axis]
    return np.clip(centre, lo, hi), velocity


def random_colors(rng: np.random.Generator, hue: float) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A saturated colour near `hue` and a darker partner, so actors stand out from the
    muted background."""
    hue = (hue + rng.uniform(-0.04, 0.04)) % 1.0
    bright = hsv_to_rgb(hue, rng.uniform(0.65, 0.9), rng.uniform(0.8, 0.95))
    dark = hsv_to_rgb((hue + rng.uniform(0.3, 0.7)) % 1.0, rng.uniform(0.5, 0.8), rng.uniform(0.25, 0.45))
    return bright, dark


def hsv_to_rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    """HSV in [0, 1] -> RGB bytes."""
    i = int(hue * 6.0) % 6
    f = hue * 6.0 - math.floor(hue * 6.0)
    p, q, t = value * (1 - saturation), value * (1 - saturation * f), value * (1 - saturation * (1 - f))
    rgb = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][i]
    return tuple(int(round(255 * c)) for c in rgb)


def random_actor(rng: np.random.Generator, person_id: int, config: SceneConfig,
                 hue: float | None = None) -> Actor:
    """An actor with a random look (main colour near `hue`, random if None), action
    segments and track."""
    hue = rng.random() if hue is None else hue
    size = (float(rng.uniform(*config.actor_width)), float(rng.uniform(*config.actor_height)))
    segments = random_segments(rng, config)
    return Actor(
        person_id=person_id,
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        colors=random_colors(rng, hue),
        size=size,
        centres=random_track(rng, config, size, segments),
        segments=segments,
        period=float(rng.uniform(*config.period)),
        phase=float(rng.random()),
    )


def make_scene(rng: np.random.Generator, video_id: str, config: SceneConfig, onset: int) -> Scene:
    """A scene of `config.actors` actors (person ids 0, 1, ...) from video second `onset`.

    The actors' main hues are spread round the colour wheel so that they look distinct.
    """
    first_hue = rng.random()
    actors = tuple(random_actor(rng, pid, config, hue=(first_hue + pid / config.actors) % 1.0)
                   for pid in range(config.actors))
    return Scene(video_id=video_id, width=config.width, height=config.height, onset=onset,
                 seconds=config.seconds, actors=actors,
                 background_seed=int(rng.integers(2**31)))


def actions_at(actor: Actor, second: int) -> tuple[int, ...]:
    """Sorted action ids of `actor` at elapsed second `second` (empty outside its life)."""
    for segment in actor.segments:
        if segment.start <= second < segment.end:
            return segment.actions
    return ()


def box_at(actor: Actor, tau: float) -> tuple[float, float, float, float]:
    """Normalised ``[x1, y1, x2, y2]`` of `actor` at elapsed time `tau` (s), in 0..seconds."""
    last = len(actor.centres) - 1
    tau = min(max(tau, 0.0), float(last))
    k = min(int(math.floor(tau)), last - 1) if last > 0 else 0
    frac = tau - k if last > 0 else 0.0
    (xa, ya), (xb, yb) = actor.centres[k], actor.centres[min(k + 1, last)]
    cx, cy = xa + (xb - xa) * frac, ya + (yb - ya) * frac
    w, h = actor.size
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def present(scene: Scene, t: float) -> bool:
    """Whether the actors are on screen at video time `t` (s)."""
    return scene.onset <= t < scene.onset + scene.seconds
