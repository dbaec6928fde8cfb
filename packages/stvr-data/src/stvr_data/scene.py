"""Synthetic scenes: who is where, doing what, and when. Pure data, no pixels, no files.

A scene is a fixed backdrop with a few actors. The sample is built so that the task of
the paper can be learned on it and needs what the paper's model has:

**Compositional actions** (`synthetic_actions.py`): every actor-second carries one
value on each of three independent cue axes, so held-out combined labels are new
combinations of values that training labels show.

**Lookalikes.** All actors of a video share one look (shape, texture, colours, size),
drawn independently of what they do, and at every second they carry pairwise different
combined labels. Appearance says nothing about the label; only the query tells which
actor is meant.

**Motion in feature cells.** `SceneConfig.motion` is the displacement of an actor
between two consecutive 8-frame clips (1/3 s), in feature cells of the benchmark built
from the sample at `feature_resolution` x `feature_resolution` pixels (`build-ava
--resolution RxR`): a cell is 16 px (`FEATURE_STRIDE`), so 1/(R/16) of the frame's
width or height. Motion m at R = 320 moves an actor m/20 of the frame per clip (at
R = 160: m/10). AVA annotates one box per person per second and the benchmark labels
the three clips of a second with it, so an actor cannot travel far within a second and
keep an honest box. The actors therefore step back and forth on the clip grid: during
clip n of the scene (elapsed seconds ``[n/3, (n+1)/3)``) an actor stands at ``anchor
+ hop`` for even n and ``anchor - hop`` for odd n, with ``|hop| = motion / 2`` cells in a
direction drawn per segment within `max_tilt` degrees of vertical (actors are taller
than wide, so vertical steps keep the most overlap). Every clip is thus `motion` cells
from the one before, and the keyframe box, centred on the anchor, overlaps the drawn
actor at every frame of its second by at least `worst_keyframe_iou` (checked to exceed
`MIN_KEYFRAME_IOU` when the config is made). Motion 0: the actors stand still.

**Leaps.** Swaying around one box cannot show what warping the memory buys: the box
never moves, so a memory that stays put is already in the right place. `SceneConfig.leap`
moves the box itself: at every second boundary an actor jumps `leap` feature cells
sideways, to the other of two places ``leap / 2`` cells either side of its anchor, and
holds that place for the whole second, so the second's keyframe box is exact. All actors
of a video leap together (right of their anchors in even seconds, left in odd ones), as
if the camera panned back and forth. A leap wider than the actor (about
2 cells at 160 px) leaves no overlap between its two places: what a memory stored one
clip ago lies outside the actor's new box unless the state is moved with it.

Times: an actor exists from the scene's ``onset`` (an integer video second, so the
scene's clip grid is the benchmark's) for ``seconds`` seconds. Inside this module time
is *elapsed* seconds since the onset (``tau``); the keyframe at elapsed second ``k`` is
video second ``onset + k``. Boxes are normalised ``[x1, y1, x2, y2]`` (AVA order).

`make_scene` draws everything from a numpy Generator, so a seeded Generator gives the
same scene every time; the AVA sample (`sample.py`) and the UCF one reuse it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stvr_data.errors import StvrDataError
from stvr_data.manifest import CLIPS_PER_SECOND
from stvr_data.synthetic_actions import ACTIONS, label_sets

SHAPES = ("person", "ellipse", "rect")
# Every pattern has horizontal structure, so a vertical texture drift is always visible.
PATTERNS = ("hstripes", "checker", "diagonal")
FEATURE_STRIDE = 16  # the backbone's spatial stride (pixels per feature cell)
MIN_KEYFRAME_IOU = 0.52  # 0.5 plus room for pixel and 3-decimal rounding


class SceneConfigError(StvrDataError):
    """A synthetic-data setting that cannot produce a valid scene; names the field."""


@dataclass(frozen=True)
class SceneConfig:
    """How a synthetic scene is drawn at random. Sizes are fractions of the frame.

    `motion`: cells per clip at a `feature_resolution` px square benchmark (module
    docstring); `max_tilt`: largest angle (degrees) of a step from vertical; `leap`:
    cells an actor jumps sideways at every second boundary (module docstring).
    `segment_seconds`: (shortest, longest) segment, at least 2 s so that a segment
    outlasts its first-second cues. `actions` restricts the vocabulary (empty: all);
    an axis left without actions is not drawn.
    """

    width: int = 320
    height: int = 240
    actors: int = 3
    seconds: int = 30
    motion: float = 1.5
    feature_resolution: int = 320
    leap: float = 0.0
    max_tilt: float = 25.0
    segment_seconds: tuple[int, int] = (2, 4)
    actor_width: tuple[float, float] = (0.18, 0.22)
    actor_height: tuple[float, float] = (0.52, 0.62)
    actions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.actions) - {a.action_id for a in ACTIONS}
        if unknown:
            raise SceneConfigError(f"SceneConfig.actions: unknown action ids {sorted(unknown)}")
        checks = {
            "width": self.width >= 32 and self.width % 2 == 0,
            "height": self.height >= 32 and self.height % 2 == 0,
            "actors": self.actors >= 1,
            "seconds": self.seconds >= 1,
            "motion": self.motion >= 0.0,
            "leap": self.leap >= 0.0,
            "feature_resolution": self.feature_resolution >= FEATURE_STRIDE,
            "max_tilt": 0.0 <= self.max_tilt <= 90.0,
            "segment_seconds": 2 <= self.segment_seconds[0] <= self.segment_seconds[1],
            "actor_width": 0.0 < self.actor_width[0] <= self.actor_width[1] <= 0.5,
            "actor_height": 0.0 < self.actor_height[0] <= self.actor_height[1] <= 0.9,
        }
        for name, ok in checks.items():
            if not ok:
                raise SceneConfigError(f"SceneConfig.{name}: invalid value {getattr(self, name)!r}")
        self._check_motion()
        self._check_labels()

    @property
    def cells(self) -> float:
        """Feature cells across the benchmark frame (20 at 320 px)."""
        return self.feature_resolution / FEATURE_STRIDE

    def _check_motion(self) -> None:
        worst = worst_keyframe_iou(self)
        where = f"{self.motion:g} cells per clip at {self.feature_resolution} px"
        if worst < MIN_KEYFRAME_IOU:
            raise SceneConfigError(
                f"SceneConfig.motion: {where} moves the actors too far for one box per second "
                f"(keyframe IoU down to {worst:.2f}, needs {MIN_KEYFRAME_IOU}); lower the motion, "
                "raise the feature resolution or lower the tilt (0: vertical steps only)")
        hop_x, hop_y = hop_extent(self)
        if self.actor_width[1] + 2 * hop_x > 0.98 or self.actor_height[1] + 2 * hop_y > 0.98:
            raise SceneConfigError(f"SceneConfig.motion: {where} steps the actors out of the frame")
        if self.actor_width[1] + 2 * hop_x + 2 * self.half_leap > 0.98:
            raise SceneConfigError(f"SceneConfig.leap: {self.leap:g} cells at {self.feature_resolution} px "
                                   "leaps the actors out of the frame")

    @property
    def half_leap(self) -> float:
        """Normalised distance from an actor's anchor to either of its two places."""
        return self.leap / 2.0 / self.cells

    def _check_labels(self) -> None:
        labels = len(label_sets(self.actions))
        # Neighbouring segments differ, and lookalikes never share a label: a segment
        # must avoid its predecessor and every label the other actors hold meanwhile.
        low, high = self.segment_seconds
        overlapped = math.ceil((high + low - 2) / low) + 1
        needed = 2 + (self.actors - 1) * overlapped
        if labels < needed:
            raise SceneConfigError(
                f"SceneConfig.actions: {labels} combined labels are too few for {self.actors} "
                f"actors that never share one (needs {needed})")


def worst_keyframe_iou(config: SceneConfig) -> float:
    """Lowest IoU between a keyframe box and its actor drawn one step off the anchor.

    The smallest actor and every step direction within `max_tilt` of vertical; the
    box and the drawn actor have the same size, shifted by the half-step `hop`.
    """
    half = config.motion / 2.0 / config.cells
    width, height = config.actor_width[0], config.actor_height[0]
    worst = 1.0
    for tilt in np.linspace(0.0, math.radians(config.max_tilt), 31):
        kept = max(0.0, 1 - half * math.sin(tilt) / width) * max(0.0, 1 - half * math.cos(tilt) / height)
        worst = min(worst, kept / (2.0 - kept))
    return float(worst)


def hop_extent(config: SceneConfig) -> tuple[float, float]:
    """Largest normalised (x, y) half-step of any direction `random_hop` can draw."""
    half = config.motion / 2.0 / config.cells
    return half * math.sin(math.radians(config.max_tilt)), half


@dataclass(frozen=True)
class Look:
    """What an actor looks like, shared by the lookalikes of a video.

    `colors` are the texture's (bright, dark) RGB; `size` is the normalised (w, h).
    """

    shape: str
    pattern: str
    colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    size: tuple[float, float]


@dataclass(frozen=True)
class Segment:
    """Elapsed seconds ``[start, end)`` during which an actor holds one action set.

    `hop` is the normalised (dx, dy) half-step of the actor's back-and-forth during the
    segment (zero when it stands still).
    """

    start: int
    end: int
    actions: tuple[int, ...]
    hop: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Actor:
    """One synthetic person: look, spot, what it does and the phase of its blinking.

    `anchor` is the normalised box centre between its two steps; `phase` (a fraction of
    a blink period) keeps two actors blinking alike from being in lockstep; `half_leap`
    the normalised sideways distance of its two places from the anchor (0: one place).
    """

    person_id: int
    look: Look
    anchor: tuple[float, float]
    segments: tuple[Segment, ...]
    phase: float
    half_leap: float = 0.0


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


def random_segments(rng: np.random.Generator, config: SceneConfig,
                    taken: list[set[tuple[int, ...]]]) -> tuple[Segment, ...]:
    """Consecutive segments covering elapsed seconds ``[0, config.seconds)``.

    A segment's action set differs from the one before it (so that each links into its
    own tubelet) and from every set in ``taken[k]`` for the seconds k it covers (the
    other actors' sets); it is drawn uniformly from the rest. Every segment is at least
    the shortest length (a short remainder joins the last segment).
    """
    low, high = config.segment_seconds
    labels = label_sets(config.actions)
    segments: list[Segment] = []
    start, previous = 0, ()
    while start < config.seconds:
        end = min(start + int(rng.integers(low, high + 1)), config.seconds)
        if config.seconds - end < low:
            end = config.seconds
        avoid = {previous}.union(*taken[start:end])
        allowed = [label for label in labels if label not in avoid]
        previous = allowed[int(rng.integers(len(allowed)))]
        segments.append(Segment(start, end, previous, random_hop(rng, config)))
        start = end
    return tuple(segments)


def random_hop(rng: np.random.Generator, config: SceneConfig) -> tuple[float, float]:
    """A normalised half-step of ``motion / 2`` cells, within `max_tilt` of vertical.

    The same draws for any motion, so that the motion changes nothing else.
    """
    tilt = math.radians(config.max_tilt) * rng.uniform(-1.0, 1.0)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    half = config.motion / 2.0 / config.cells
    return (sign * half * math.sin(tilt), sign * half * math.cos(tilt))


def hsv_to_rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    """HSV in [0, 1] -> RGB bytes."""
    i = int(hue * 6.0) % 6
    f = hue * 6.0 - math.floor(hue * 6.0)
    p, q, t = value * (1 - saturation), value * (1 - saturation * f), value * (1 - saturation * (1 - f))
    rgb = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][i]
    return tuple(int(round(255 * c)) for c in rgb)


def random_look(rng: np.random.Generator, config: SceneConfig) -> Look:
    """A random shape, texture, size and colour pair: a bright colour of moderate
    saturation (so that the saturated cue colours stand out) and a darker partner."""
    hue = rng.random()
    bright = hsv_to_rgb(hue, rng.uniform(0.3, 0.55), rng.uniform(0.75, 0.9))
    dark = hsv_to_rgb((hue + rng.uniform(0.3, 0.7)) % 1.0, rng.uniform(0.4, 0.7), rng.uniform(0.25, 0.45))
    return Look(
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        colors=(bright, dark),
        size=(float(rng.uniform(*config.actor_width)), float(rng.uniform(*config.actor_height))),
    )


def random_anchor(rng: np.random.Generator, config: SceneConfig, size: tuple[float, float],
                  slot: int) -> tuple[float, float]:
    """A spot in column `slot` of `config.actors` equal columns (so that lookalikes
    overlap little), where the actor stays 1% inside the frame at both steps and both
    places."""
    hop_x, hop_y = hop_extent(config)
    lo = np.array([size[0] / 2 + hop_x + config.half_leap + 0.01, size[1] / 2 + hop_y + 0.01])
    hi = 1.0 - lo
    column = (slot / config.actors + lo[0], (slot + 1) / config.actors - lo[0])
    x_lo, x_hi = max(lo[0], column[0]), min(hi[0], column[1])
    if x_lo > x_hi:  # a column narrower than the actor: its middle, kept in the frame
        x_lo = x_hi = min(max((slot + 0.5) / config.actors, lo[0]), hi[0])
    u = rng.random(2)
    return (float(x_lo + u[0] * (x_hi - x_lo)), float(lo[1] + u[1] * (hi[1] - lo[1])))


def random_actor(rng: np.random.Generator, person_id: int, config: SceneConfig, look: Look,
                 slot: int, segments: tuple[Segment, ...]) -> Actor:
    """An actor with `look` and `segments`, a random spot in column `slot` and a random
    blink phase."""
    anchor = random_anchor(rng, config, look.size, slot)
    return Actor(person_id=person_id, look=look, anchor=anchor, segments=segments, phase=float(rng.random()),
                 half_leap=config.half_leap)


def make_scene(rng: np.random.Generator, video_id: str, config: SceneConfig, onset: int) -> Scene:
    """A scene of `config.actors` lookalikes (person ids 0, 1, ...) from video second
    `onset`, never sharing a combined label at the same second."""
    look = random_look(rng, config)
    slots = rng.permutation(config.actors)
    taken: list[set[tuple[int, ...]]] = [set() for _ in range(config.seconds)]
    actors = []
    for person_id in range(config.actors):
        segments = random_segments(rng, config, taken)
        for segment in segments:
            for second in range(segment.start, segment.end):
                taken[second].add(segment.actions)
        actors.append(random_actor(rng, person_id, config, look, int(slots[person_id]), segments))
    return Scene(video_id=video_id, width=config.width, height=config.height, onset=onset,
                 seconds=config.seconds, actors=tuple(actors), background_seed=int(rng.integers(2**31)))


def segment_at(actor: Actor, tau: float) -> Segment:
    """The segment holding elapsed time `tau` (the first or last one outside them)."""
    second = math.floor(tau)
    for segment in actor.segments:
        if second < segment.end:
            return segment
    return actor.segments[-1]


def actions_at(actor: Actor, second: int) -> tuple[int, ...]:
    """Sorted action ids of `actor` at elapsed second `second` (empty outside its life)."""
    if not actor.segments or not 0 <= second < actor.segments[-1].end:
        return ()
    return segment_at(actor, second).actions


def clip_index(tau: float) -> int:
    """Number of the 8-frame clip (1/3 s) holding elapsed time `tau`; float-safe at the
    clip boundaries (``tau = n / 3`` computed as ``t - onset`` is in clip n)."""
    return math.floor(tau * CLIPS_PER_SECOND + 1e-6)


def place(actor: Actor, second: int) -> tuple[float, float]:
    """Normalised centre of the actor's place during elapsed second `second`: its anchor,
    or with leaps right of it in even seconds and left in odd ones."""
    side = 1.0 if second % 2 == 0 else -1.0
    return (actor.anchor[0] + side * actor.half_leap, actor.anchor[1])


def box_at(actor: Actor, tau: float) -> tuple[float, float, float, float]:
    """Normalised ``[x1, y1, x2, y2]`` of the actor as drawn at elapsed time `tau` (s):
    one step off its place, to one side in even clips and to the other in odd ones."""
    dx, dy = segment_at(actor, tau).hop
    sign = 1.0 if clip_index(tau) % 2 == 0 else -1.0
    x, y = place(actor, math.floor(tau))
    return _box((x + sign * dx, y + sign * dy), actor.look.size)


def keyframe_box(actor: Actor, second: int) -> tuple[float, float, float, float]:
    """Normalised ``[x1, y1, x2, y2]`` annotated at elapsed second `second`: centred on
    the second's place, between the two steps, so that it overlaps the actor in all its
    clips."""
    return _box(place(actor, second), actor.look.size)


def _box(centre: tuple[float, float], size: tuple[float, float]) -> tuple[float, float, float, float]:
    (cx, cy), (w, h) = centre, size
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def present(scene: Scene, t: float) -> bool:
    """Whether the actors are on screen at video time `t` (s)."""
    return scene.onset <= t < scene.onset + scene.seconds
