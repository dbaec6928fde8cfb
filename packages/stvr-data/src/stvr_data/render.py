"""Draw synthetic scenes (`scene.py`) into RGB frames with vectorised numpy.

A frame is a pure function of the scene and the time, so it can be redrawn exactly
for any instant (tests compare decoded video against it); only `draw_actor` paints
into a frame in place. Encoding to files lives in `synthetic_video.py`.

An actor is a sprite filling its box: a shape (person silhouette, ellipse or
rectangle) cut from a two-colour texture (horizontal stripes, checker or diagonal
stripes) in pixel units, so the texture moves with the box. Action cues, by
`Action.cue`:

    still        nothing added (stand)
    lowered      the lower 45% of the sprite is darkened (sit)
    drift_up     the texture slides up at DRIFT px/s inside the sprite (get up)
    drift_down   the texture slides down (fall down); over one 1/3 s clip it travels
                 4 px, a third of the stripe period, so the direction is faint in a
                 single clip and plain over several
    badge        a white badge on the upper body (carry/hold)
    badge_blink  the same badge, shown only in the first half of each period (~1 s):
                 a single clip may show it steadily on, like `badge` (hand wave)
    badge_hue    the badge's hue runs once round the colour wheel per period (watch)
    pulse        a dark disc whose radius swells and shrinks once per period (talk)
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from stvr_data.scene import ACTIONS_BY_ID, Actor, Scene, actions_at, box_at, hsv_to_rgb, present

STRIPE = 6  # texture half-period in pixels
DRIFT = 12.0  # texture drift in px/s for drift_up / drift_down
BADGE = (0.55, 0.3, 0.9, 0.48)  # badge [u1, v1, u2, v2] in sprite-relative units
BADGE_WHITE = (245, 245, 245)
PULSE_COLOR = (20, 20, 20)


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
    # A keyframe's actions hold over its whole second [t, t + 1).
    cues = {ACTIONS_BY_ID[a].cue for a in actions_at(actor, int(math.floor(tau)))}
    direction = 1 if "drift_up" in cues else -1 if "drift_down" in cues else 0
    # Texture rows shift by whole pixels; the box itself moves by whole pixels too.
    offset = round(DRIFT * tau * direction) % (2 * STRIPE)
    phase = (actor.phase + tau / actor.period) % 1.0
    badge = None
    if "badge" in cues or ("badge_blink" in cues and phase < 0.5):
        badge = BADGE_WHITE
    elif "badge_hue" in cues:
        badge = hsv_to_rgb(phase, 1.0, 1.0)
    radius = None
    if "pulse" in cues:
        # Rounded to 1/1000 of the width: finer than a pixel, and repeats hit the cache.
        radius = round(0.12 + 0.12 * (0.5 + 0.5 * math.sin(2.0 * math.pi * phase)), 3)
    look = (actor.shape, actor.pattern, actor.colors)
    return look, width, height, offset, "lowered" in cues, badge, radius


@lru_cache(maxsize=1024)
def _sprite(look: tuple, width: int, height: int, offset: int, lowered: bool,
            badge: tuple[int, int, int] | None, radius: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Draw one sprite state; `look` is ``(shape, pattern, colors)``.

    Returns the (h, w, 3) colours and the silhouette repeated over the 3 channels
    (a contiguous mask copies about 3x faster than a broadcast one).
    """
    shape, pattern, colors = look
    first = _pattern(pattern, width, height)[offset:offset + height]
    bright, dark = (np.array(c, dtype=np.uint8) for c in colors)
    rgb = np.where(first[..., None], bright, dark)
    if lowered:
        rgb[_span(0.55, 1.0, height)] //= 2
    if badge is not None:
        u1, v1, u2, v2 = BADGE
        rgb[_span(v1, v2, height), _span(u1, u2, width)] = badge
    if radius is not None:
        u, v = _coordinates(width, height)
        rgb[(u - 0.5) ** 2 + ((v - 0.68) * height / width) ** 2 <= radius**2] = PULSE_COLOR
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
