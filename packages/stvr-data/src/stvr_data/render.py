"""Draw synthetic scenes (`scene.py`) into RGB frames with vectorised numpy.

A frame is a pure function of the scene and the time, so it can be redrawn exactly
for any instant (tests compare decoded video against it); only `draw_actor` paints
into a frame in place. Encoding to files lives in `synthetic_video.py`.

An actor is a sprite filling its box: a shape (person silhouette, ellipse or
rectangle) cut from a two-colour texture (horizontal stripes, checker or diagonal
stripes) in pixel units, so the texture moves with the box. Its look is its video's
(lookalikes); its actions add one cue per axis (`synthetic_actions.ACTIONS`), each on its own part:

    texture (PERSON_MOVEMENT)   still, or sliding up / down at DRIFT px/s: 8 px per
                                clip, half a stripe period, so one clip's 8 frames
                                show the direction
    lamp (PERSON_INTERACTION)   a disc-like patch on the head, LAMP_ON or LAMP_OFF:
                                steady on, or on for the first half of each period at
                                1 Hz or 3 Hz (BLINK_HZ), phase per actor
    badge (OBJECT_MANIPULATION) a patch on the chest in the action's colour
                                (BADGE_COLORS) during the first EARLY_SECONDS of a
                                segment, then BADGE_GREY whatever the action

An axis an actor has no action on draws no part (the UCF sample uses such sets).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from stvr_data.scene import Actor, Scene, Segment, box_at, present, segment_at
from stvr_data.synthetic_actions import ACTIONS_BY_ID, EARLY_SECONDS

STRIPE = 8  # texture half-period in pixels
DRIFT = 24.0  # texture drift in px/s for drift_up / drift_down
DRIFT_DIRECTION = {"still": 0, "drift_up": 1, "drift_down": -1}  # +1: the texture slides up
BLINK_HZ = {"steady": 0.0, "blink_1hz": 1.0, "blink_3hz": 3.0}  # 0: always on
BADGE_COLORS = {"red": (225, 30, 30), "blue": (30, 80, 235)}
BADGE_GREY = (185, 185, 185)
LAMP_ON = (255, 236, 60)
LAMP_OFF = (28, 28, 28)
LAMP = (0.28, 0.02, 0.72, 0.16)  # lamp [u1, v1, u2, v2] in sprite-relative units
BADGE = (0.18, 0.28, 0.82, 0.5)  # badge, likewise


def render_background(scene: Scene) -> np.ndarray:
    """The scene's static backdrop, (H, W, 3) uint8 RGB, from `scene.background_seed`.

    Muted, low-saturation colours (smooth blotches, a floor, a few pieces of
    "furniture", fine grain) so that the saturated actors are the salient objects.
    """
    rng = np.random.default_rng(scene.background_seed)
    height, width = scene.height, scene.width
    grey = rng.uniform(90.0, 160.0, (4, 6, 1))
    tint = rng.uniform(-12.0, 12.0, (4, 6, 3))
    image = _upsample(grey + tint, height, width)
    floor = int(height * rng.uniform(0.6, 0.75))
    image[floor:] = image[floor:] * 0.75 + np.array(rng.uniform(40.0, 90.0, 3))
    for _ in range(3):
        x1, y1 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 2 // 3))
        w, h = int(rng.integers(width // 10, width // 4)), int(rng.integers(height // 10, height // 3))
        image[y1:y1 + h, x1:x1 + w] = rng.uniform(60.0, 180.0) + rng.uniform(-10.0, 10.0, 3)
    image += rng.normal(0.0, 3.0, (height, width, 1))
    return np.ascontiguousarray(np.clip(image, 0, 255), dtype=np.uint8)


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a small (h, w, C) grid to (height, width, C), float32."""
    gh, gw = grid.shape[:2]
    ys, xs = np.linspace(0, gh - 1, height), np.linspace(0, gw - 1, width)
    y0, x0 = np.minimum(ys.astype(int), gh - 2), np.minimum(xs.astype(int), gw - 2)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - wx) + grid[y0][:, x0 + 1] * wx
    bottom = grid[y0 + 1][:, x0] * (1 - wx) + grid[y0 + 1][:, x0 + 1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def render_frame(scene: Scene, t: float, backdrop: np.ndarray | None = None,
                 out: np.ndarray | None = None) -> np.ndarray:
    """The frame at video time `t` (s): (H, W, 3) uint8 RGB.

    `backdrop` is `render_background(scene)`, passed in to avoid redrawing it per
    frame; `out`, if given, is a buffer of the same shape that receives the frame
    (reusing one buffer spares a fresh allocation per frame). Actors lower in the
    frame (nearer the camera) are drawn last.
    """
    backdrop = render_background(scene) if backdrop is None else backdrop
    frame = backdrop.copy() if out is None else out
    if out is not None:
        np.copyto(frame, backdrop)
    if not present(scene, t):
        return frame
    tau = t - scene.onset
    for actor in sorted(scene.actors, key=lambda a: (box_at(a, tau)[3], a.person_id)):
        draw_actor(frame, actor, tau)
    return frame


def pixel_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """Normalised ``[x1, y1, x2, y2]`` -> pixel ``[x1, y1, x2, y2)`` clipped to the frame."""
    x1, y1, x2, y2 = box
    px1, px2 = max(0, round(x1 * width)), min(width, round(x2 * width))
    py1, py2 = max(0, round(y1 * height)), min(height, round(y2 * height))
    return px1, py1, max(px1 + 1, px2), max(py1 + 1, py2)


def draw_actor(frame: np.ndarray, actor: Actor, tau: float) -> None:
    """Paint `actor` at elapsed time `tau` (s) into `frame` (H, W, 3) uint8, in place."""
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = pixel_box(box_at(actor, tau), width, height)
    rgb, mask3 = _sprite(*_sprite_state(actor, tau, x2 - x1, y2 - y1))
    np.copyto(frame[y1:y2, x1:x2], rgb, where=mask3)


def actor_sprite(actor: Actor, tau: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The actor's look at elapsed time `tau` in a (height, width) box.

    Returns ``(rgb, mask)``: (h, w, 3) uint8 colours and the (h, w) bool silhouette,
    both read-only (sprites in the same state are drawn once and shared).
    """
    rgb, mask3 = _sprite(*_sprite_state(actor, tau, width, height))
    return rgb, mask3[..., 0]


def _sprite_state(actor: Actor, tau: float, width: int, height: int) -> tuple:
    """Everything `_sprite` draws from: the arguments that make two sprites equal."""
    segment = segment_at(actor, tau)
    cues = {ACTIONS_BY_ID[a].cue for a in segment.actions}
    # Texture rows shift by whole pixels; the box itself moves by whole pixels too.
    offset = texture_shift(actor, tau) % (2 * STRIPE)
    lamp = next((_lamp_on(actor, tau, BLINK_HZ[c]) for c in cues if c in BLINK_HZ), None)
    badge = next((BADGE_COLORS[c] for c in cues if c in BADGE_COLORS), None)
    if badge is not None and tau - segment.start >= EARLY_SECONDS:
        badge = BADGE_GREY
    look = actor.look
    return (look.shape, look.pattern, look.colors), width, height, offset, lamp, badge


def texture_shift(actor: Actor, tau: float) -> int:
    """Pixels the texture has slid up (negative: down) by elapsed time `tau`: the
    drift of every segment so far, so that the texture never jumps."""
    total = 0.0
    for segment in actor.segments:
        if tau <= segment.start:
            break
        total += _drift_direction(segment) * (min(tau, segment.end) - segment.start)
    return round(DRIFT * total)


def _drift_direction(segment: Segment) -> int:
    return sum(DRIFT_DIRECTION.get(ACTIONS_BY_ID[a].cue, 0) for a in segment.actions)


def _lamp_on(actor: Actor, tau: float, rate: float) -> bool:
    """Steady (`rate` 0) or on during the first half of each 1/`rate` s period."""
    return rate == 0.0 or (tau * rate + actor.phase) % 1.0 < 0.5


@lru_cache(maxsize=1024)
def _sprite(look: tuple, width: int, height: int, offset: int, lamp: bool | None,
            badge: tuple[int, int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Draw one sprite state; `look` is ``(shape, pattern, colors)``, `lamp` None when
    the actor has no lamp, `badge` None when it has no badge.

    Returns the (h, w, 3) colours and the silhouette repeated over the 3 channels
    (a contiguous mask copies about 3x faster than a broadcast one).
    """
    shape, pattern, colors = look
    first = _pattern(pattern, width, height)[offset:offset + height]
    bright, dark = (np.array(c, dtype=np.uint8) for c in colors)
    rgb = np.where(first[..., None], bright, dark)
    for part, color in ((LAMP, None if lamp is None else LAMP_ON if lamp else LAMP_OFF), (BADGE, badge)):
        if color is not None:
            u1, v1, u2, v2 = part
            rgb[_span(v1, v2, height), _span(u1, u2, width)] = color
    mask3 = np.repeat(shape_mask(shape, width, height)[..., None], 3, axis=2)
    rgb.flags.writeable = mask3.flags.writeable = False
    return rgb, mask3


def _coordinates(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Sprite-relative pixel-centre coordinates: u (1, w) and v (h, 1), in (0, 1)."""
    u = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / width
    v = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / height
    return u, v


def _span(lo: float, hi: float, size: int) -> slice:
    """Pixels whose centres lie in the relative range [lo, hi) of `size` pixels."""
    return slice(math.ceil(lo * size - 0.5), math.ceil(hi * size - 0.5))


@lru_cache(maxsize=512)
def _pattern(pattern: str, width: int, height: int) -> np.ndarray:
    """Where the first colour goes: (height + 2 * STRIPE, width) bool, periodic in rows
    with period 2 * STRIPE so that drifting is a row slice."""
    ys = np.arange(height + 2 * STRIPE)[:, None]
    xs = np.arange(width)[None, :]
    if pattern == "hstripes":
        first = (ys // STRIPE) % 2 == 0
    elif pattern == "checker":
        first = (ys // STRIPE + xs // STRIPE) % 2 == 0
    else:
        first = ((ys + xs) // STRIPE) % 2 == 0
    first = np.broadcast_to(first, (height + 2 * STRIPE, width)).copy()
    first.flags.writeable = False
    return first


@lru_cache(maxsize=512)
def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """Silhouette touching all four box edges: (height, width) bool, read-only."""
    u, v = _coordinates(width, height)
    if shape == "ellipse":
        mask = ((u - 0.5) ** 2 + (v - 0.5) ** 2) * 4.0 <= 1.0
    elif shape == "rect":
        mask = np.ones((height, width), dtype=bool)
    else:
        # person: a head disc on top of a body that spans the full width.
        head = min(0.35 * width, 0.12 * height)
        dy, dx = v * height - head, u * width - width / 2
        mask = (dx**2 + dy**2 <= head**2) | (v * height >= 1.8 * head)
    mask = np.broadcast_to(mask, (height, width)).copy()
    mask.flags.writeable = False
    return mask
