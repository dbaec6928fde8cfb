"""Synthetic scenes and their drawing (`scene.py`, `render.py`): pure, no files."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter

import numpy as np
import pytest

from stvr_data.render import (
    BADGE_COLORS,
    BADGE_GREY,
    DRIFT,
    LAMP_ON,
    actor_sprite,
    draw_actor,
    texture_shift,
)
from stvr_data.sample import SampleConfig, plan_sample
from stvr_data.scene import (
    Actor,
    Look,
    SceneConfig,
    SceneConfigError,
    Segment,
    actions_at,
    keyframe_box,
    worst_keyframe_iou,
)
from stvr_data.synthetic_actions import ACTIONS, AXES, EARLY_SECONDS, label_sets

CLIP = 1 / 3  # seconds per 8-frame clip


def drawn_extent(actor: Actor, tau: float, width: int = 320, height: int = 240) -> np.ndarray:
    """Normalised [x1, y1, x2, y2] of the pixels `draw_actor` paints at `tau`, found by
    drawing on a black and on a white frame and keeping what both show alike."""
    black = np.zeros((height, width, 3), np.uint8)
    white = np.full((height, width, 3), 255, np.uint8)
    draw_actor(black, actor, tau)
    draw_actor(white, actor, tau)
    ys, xs = np.nonzero((black == white).all(axis=2))
    return np.array([xs.min() / width, ys.min() / height, (xs.max() + 1) / width, (ys.max() + 1) / height])


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def scenes(config: SceneConfig, seed: int = 0, videos: int = 2):
    plan = plan_sample(seed, SampleConfig(train_videos=0, val_videos=videos, scene=config))
    return [video.scene for video in plan]


# ---------------------------------------------------------------- motion


@pytest.mark.parametrize("motion, resolution", [(0.0, 320), (1.5, 320), (3.0, 320), (1.5, 160)])
def test_actors_step_the_requested_cells_between_clips(motion, resolution):
    config = SceneConfig(seconds=6, motion=motion, feature_resolution=resolution,
                         max_tilt=0.0 if motion == 3.0 and resolution == 160 else 25.0)
    cells = resolution / 16
    steps = []
    for scene in scenes(config):
        for actor in scene.actors:
            for segment in actor.segments:
                middles = np.arange(segment.start * 3, segment.end * 3) * CLIP + CLIP / 2
                centres = np.array([(e[:2] + e[2:]) / 2 for e in (drawn_extent(actor, t) for t in middles)])
                steps.extend(np.hypot(*(np.diff(centres, axis=0) * cells).T))
    steps = np.array(steps)
    # Pixel rounding moves a drawn centre by at most a pixel (1/12 cell at 240 px, 320 px).
    assert len(steps) > 50 and np.all(np.abs(steps - motion) < 0.15), (motion, steps.min(), steps.max())


@pytest.mark.parametrize("leap", [1.0, 2.5])
def test_actors_leap_sideways_at_every_second_boundary_and_hold_still_within_it(leap):
    """Static actors with leaps: the drawn centre moves `leap` cells horizontally from
    the last clip of a second to the first of the next, and not at all within a second."""
    config = SceneConfig(seconds=6, motion=0.0, leap=leap, actors=2, feature_resolution=160)
    cells = config.cells
    across, within = [], []
    for scene in scenes(config):
        for actor in scene.actors:
            middles = np.arange(scene.seconds * 3) * CLIP + CLIP / 2
            centres = np.array([(e[:2] + e[2:]) / 2 for e in (drawn_extent(actor, t) for t in middles)])
            steps = np.diff(centres, axis=0) * cells
            for n, (dx, dy) in enumerate(steps):
                (across if (n + 1) % 3 == 0 else within).append((abs(dx), abs(dy)))
    across, within = np.array(across), np.array(within)
    assert len(across) >= 20 and np.all(np.abs(across[:, 0] - leap) < 0.15) and np.all(across[:, 1] < 0.1)
    assert np.all(within < 0.1)


def test_leaps_that_leave_the_frame_are_refused():
    with pytest.raises(SceneConfigError, match=r"SceneConfig\.leap: 8 cells at 160 px"):
        SceneConfig(leap=8.0, feature_resolution=160, motion=0.0)
    with pytest.raises(SceneConfigError, match="leap"):
        SceneConfig(leap=-1.0)


def test_leap_changes_where_actors_stand_and_nothing_else():
    leaping, still = SceneConfig(motion=0.0, leap=2.0, actors=2), SceneConfig(motion=0.0, actors=2)
    for a, b in zip(scenes(leaping), scenes(still), strict=True):
        assert a.video_id == b.video_id and a.background_seed == b.background_seed
        for x, y in zip(a.actors, b.actors, strict=True):
            assert x.look == y.look and x.phase == y.phase and x.segments == y.segments
            assert y.half_leap == 0.0 and x.half_leap == pytest.approx(2.0 / 2 / 20)


def test_motion_changes_where_actors_stand_and_nothing_else():
    moving, static = SceneConfig(), SceneConfig(motion=0.0)
    for a, b in zip(scenes(moving), scenes(static), strict=True):
        assert a.video_id == b.video_id and a.background_seed == b.background_seed
        for x, y in zip(a.actors, b.actors, strict=True):
            assert x.look == y.look and x.phase == y.phase
            held = [[(s.start, s.end, s.actions) for s in actor.segments] for actor in (x, y)]
            assert held[0] == held[1]
            assert all(s.hop == (0.0, 0.0) for s in y.segments)
            assert any(s.hop != (0.0, 0.0) for s in x.segments)


@pytest.mark.parametrize("config", [SceneConfig(), SceneConfig(motion=3.0),
                                    SceneConfig(motion=1.5, feature_resolution=160),
                                    SceneConfig(motion=0.0, leap=2.5, actors=2, feature_resolution=160),
                                    SceneConfig(motion=1.0, leap=2.0, actors=2, feature_resolution=160)],
                         ids=["default", "3-cells", "1.5-cells-at-160", "leap", "leap-and-sway"])
def test_keyframe_boxes_overlap_the_drawn_actor_in_every_frame_of_their_second(config):
    """Every 24-fps frame of the three clips a keyframe labels, and the 30-fps source
    frames at both ends of each clip; boxes rounded to 3 decimals as the CSV has them."""
    lowest = 1.0
    for scene in scenes(dataclasses.replace(config, seconds=5)):
        for actor in scene.actors:
            for second in range(scene.seconds):
                box = np.round(keyframe_box(actor, second), 3)
                for t in second + np.concatenate([np.arange(24) / 24, np.arange(3) * CLIP + 9 / 30]):
                    lowest = min(lowest, iou(box, drawn_extent(actor, t)))
    assert lowest > 0.5
    assert lowest == pytest.approx(worst_keyframe_iou(config), abs=0.1)


def test_too_much_motion_for_one_box_per_second_is_refused():
    with pytest.raises(SceneConfigError, match=r"SceneConfig\.motion: 2 cells per clip at 160 px"):
        SceneConfig(motion=2.0, feature_resolution=160)
    assert worst_keyframe_iou(SceneConfig(motion=2.0, feature_resolution=160, max_tilt=0.0)) > 0.52
    with pytest.raises(SceneConfigError, match="motion"):
        SceneConfig(motion=-1.0)


# ---------------------------------------------------------------- labels and looks


def test_every_action_is_one_value_on_one_axis_and_labels_combine_all_axes():
    labels = label_sets(SceneConfig().actions)
    assert len(labels) == 18 and all(len(label) == len(AXES) for label in labels)
    axis = {a.action_id: a.axis for a in ACTIONS}
    assert all(sorted(axis[i] for i in label) == sorted(AXES) for label in labels)
    # Each value occurs in at least six labels: holding out four labels can never take
    # every label of a value away from training.
    assert min(Counter(i for label in labels for i in label).values()) >= 6


def test_lookalikes_share_one_look_and_never_one_label():
    for seed in range(4):
        for scene in scenes(SceneConfig(), seed=seed, videos=3):
            assert len({actor.look for actor in scene.actors}) == 1
            for second in range(scene.seconds):
                held = [actions_at(actor, second) for actor in scene.actors]
                assert len(set(held)) == len(held), (scene.video_id, second, held)
    looks = {scene.actors[0].look for scene in scenes(SceneConfig(), videos=6)}
    assert len(looks) == 6  # videos differ in look


def test_segments_change_labels_and_last_at_least_the_shortest_length():
    for scene in scenes(SceneConfig(seconds=31), videos=3):
        for actor in scene.actors:
            spans = [(s.end - s.start) for s in actor.segments]
            assert min(spans) >= 2 and sum(spans) == 31
            assert all(a.actions != b.actions for a, b in itertools.pairwise(actor.segments))


def test_too_few_labels_for_the_actors_is_refused():
    with pytest.raises(SceneConfigError, match="too few for 3 actors"):
        SceneConfig(actions=(12, 5, 17, 80))
    with pytest.raises(SceneConfigError, match="unknown action ids"):
        SceneConfig(actions=(12, 99))
    assert len(label_sets((5, 6, 12, 69, 79, 80))) == 9  # badge axis dropped


# ---------------------------------------------------------------- cues


def _actor(actions: tuple[int, ...], start: int = 0, end: int = 4, phase: float = 0.0) -> Actor:
    look = Look(shape="rect", pattern="hstripes", colors=((200, 170, 150), (30, 30, 90)), size=(0.2, 0.5))
    segments = ((Segment(0, start, (12, 17, 80)),) if start else ()) + (Segment(start, end, actions),)
    return Actor(person_id=0, look=look, anchor=(0.5, 0.5), segments=segments, phase=phase)


def _at(rgb: np.ndarray, u: float, v: float) -> tuple[int, ...]:
    return tuple(int(c) for c in rgb[int(v * rgb.shape[0]), int(u * rgb.shape[1])])


def test_badge_colour_shows_only_in_the_first_second_of_a_segment():
    for action, colour in ((17, "red"), (59, "blue")):
        actor = _actor((5, action, 69), start=2, end=6)
        for tau in np.arange(2, 6, CLIP / 2) + 0.01:
            badge = _at(actor_sprite(actor, tau, 64, 120)[0], 0.5, 0.4)
            assert badge == (BADGE_COLORS[colour] if tau - 2 < EARLY_SECONDS else BADGE_GREY), (action, tau)


def test_badge_colour_shows_in_the_first_clips_of_every_sample_segment():
    for scene in scenes(SceneConfig(seconds=12)):
        for actor in scene.actors:
            for segment in actor.segments:
                clips = np.arange(segment.start * 3, segment.end * 3) * CLIP + CLIP / 2
                coloured = [_at(actor_sprite(actor, t, 64, 120)[0], 0.5, 0.4) != BADGE_GREY for t in clips]
                assert coloured == [k < 3 * EARLY_SECONDS for k in range(len(clips))]


def test_lamp_rhythms_need_one_clip_or_several():
    frames = np.arange(24 * 3) / 24  # three seconds of 24-fps frames
    def lamp(action, phase):
        actor = _actor((12, 17, action), end=4, phase=phase)
        return np.array([_at(actor_sprite(actor, t, 64, 120)[0], 0.5, 0.09) == LAMP_ON for t in frames])
    steady_clips = 0
    for phase in (0.0, 0.3, 0.77):
        steady, slow, fast = lamp(80, phase), lamp(69, phase), lamp(79, phase)
        assert steady.all() and slow.mean() == pytest.approx(0.5, abs=0.05)
        fast_clips, slow_clips = fast.reshape(-1, 8), slow.reshape(-1, 8)
        assert all(c.any() and not c.all() for c in fast_clips)  # 3 Hz: on and off in every clip
        # 1 Hz: every second has a clip without a change, off or (then like steady) on.
        assert all(any(c.all() or not c.any() for c in second) for second in slow_clips.reshape(3, 3, 8))
        steady_clips += sum(c.all() for c in slow_clips)
    assert steady_clips > 0


def test_texture_drifts_up_or_down_and_never_jumps():
    up, down = _actor((6,)), _actor((5,))  # no lamp, no badge: nothing but the texture
    a, b = actor_sprite(up, 0.0, 64, 120)[0], actor_sprite(up, 0.125, 64, 120)[0]
    rows = round(DRIFT * 0.125)
    assert np.array_equal(a[rows:], b[:-rows])
    c = actor_sprite(down, 0.125, 64, 120)[0]
    assert np.array_equal(a[:-rows], c[rows:])
    actor = _actor((6, 17, 80), start=2, end=5)  # still for 2 s, then up
    shifts = [texture_shift(actor, t) for t in np.arange(0, 5, 1 / 30)]
    assert max(abs(np.diff(shifts))) <= math.ceil(DRIFT / 30)
    assert shifts[59] == 0 and shifts[-1] == round(DRIFT * (5 - 1 / 30 - 2))
