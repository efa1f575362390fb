"""Drawing for the spurious-cue world: shapes, clutter textures, six context cues, six objects.

Everything paints vectorised numpy onto a float32 RGB ``Canvas`` in [0, 1]; each painter takes a
``numpy.random.Generator`` and returns the boolean mask of the pixels it painted. Class ``k``
(0-based) is ``CLASS_NAMES[k]``, its cue ``CUE_NAMES[k]`` lies in a band on side ``CUE_SIDES[k]``.
``draw_scene`` lays one image out: clutter, then cue bands, then objects on them.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image

CLASS_NAMES = ("train", "boat", "aeroplane", "sheep", "car", "bird")
CUE_NAMES = ("rails", "water", "sky", "grass", "road", "foliage")
CUE_SIDES = ("bottom", "bottom", "top", "bottom", "bottom", "top")
# object height / width, so a layout can stand an object on its cue
OBJECT_ASPECTS = (0.6, 0.9, 0.65, 0.65, 0.5, 0.7)


@dataclass
class Canvas:
    """An RGB float canvas with its pixel-centre coordinate grids."""

    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    yy: np.ndarray  # (H, W) float32 row coordinate of each pixel centre
    xx: np.ndarray

    @classmethod
    def blank(cls, size: int) -> Canvas:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        return cls(np.zeros((size, size, 3), np.float32), yy, xx)

    @property
    def size(self) -> int:
        return self.rgb.shape[0]

    def paint(self, mask: np.ndarray, colour) -> np.ndarray:
        """Paint ``colour`` (an RGB triple or a full (H, W, 3) texture) where ``mask`` is set."""
        colour = np.asarray(colour, np.float32)
        self.rgb[mask] = colour[mask] if colour.ndim == 3 else colour
        return mask


# ---- shapes -------------------------------------------------------------------------------------


def ellipse(c: Canvas, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    ry, rx = max(ry, 0.6), max(rx, 0.6)  # never thinner than a pixel
    return ((c.yy - cy) / ry) ** 2 + ((c.xx - cx) / rx) ** 2 <= 1.0


def box(c: Canvas, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    return (c.yy >= y0) & (c.yy < y1) & (c.xx >= x0) & (c.xx < x1)


def polygon(c: Canvas, points: list[tuple[float, float]]) -> np.ndarray:
    """Inside of a convex polygon given as (x, y) vertices in either winding order."""
    pos = np.ones(c.yy.shape, bool)
    neg = np.ones(c.yy.shape, bool)
    for (xa, ya), (xb, yb) in zip(points, points[1:] + points[:1]):
        cross = (xb - xa) * (c.yy - ya) - (yb - ya) * (c.xx - xa)
        pos &= cross >= 0
        neg &= cross <= 0
    return pos | neg


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a ``cells`` x ``cells`` random grid upsampled bilinearly."""
    small = rng.random((max(cells, 2), max(cells, 2)), dtype=np.float32)
    return np.asarray(Image.fromarray(small, "F").resize((size, size), Image.BILINEAR))


def jitter(rng: np.random.Generator, rgb, amount: float = 0.06) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0.0, 1.0)


def muted_colour(rng: np.random.Generator, saturation: float = 0.3) -> np.ndarray:
    """A pale colour of any hue (clutter must not look like a cue)."""
    hsv = (rng.uniform(0, 1), rng.uniform(0, saturation), rng.uniform(0.3, 0.8))
    return np.asarray(colorsys.hsv_to_rgb(*hsv), np.float32)


def vivid_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour of any hue."""
    hsv = (rng.uniform(0, 1), rng.uniform(0.5, 0.9), rng.uniform(0.55, 0.95))
    return np.asarray(colorsys.hsv_to_rgb(*hsv), np.float32)


def _shade(base: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Per-pixel brightness modulation of one colour: (H, W) factors -> (H, W, 3)."""
    return np.clip(amount[..., None] * base, 0.0, 1.0)


# ---- clutter: base tone, distractor textures and shapes shared by every image ------------------


def bricks(c: Canvas, rng: np.random.Generator) -> np.ndarray:
    height = c.size * rng.uniform(0.08, 0.13)
    width = 2.0 * height
    row = np.floor(c.yy / height)
    col = np.floor((c.xx + (row % 2) * width / 2) / width)
    table = rng.uniform(0.8, 1.15, (int(row.max()) + 2, int(col.max()) + 2)).astype(np.float32)
    tex = _shade(jitter(rng, (0.62, 0.32, 0.22)), table[row.astype(int), col.astype(int)])
    mortar = (c.yy % height < 1.0) | ((c.xx + (row % 2) * width / 2) % width < 1.0)
    tex[mortar] = jitter(rng, (0.8, 0.78, 0.72))
    return tex


def sand(c: Canvas, rng: np.random.Generator) -> np.ndarray:
    speckle = rng.uniform(0.8, 1.15, c.yy.shape).astype(np.float32)
    return _shade(jitter(rng, (0.82, 0.72, 0.52)), speckle)


def stripes(c: Canvas, rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, np.pi)
    period = c.size * rng.uniform(0.08, 0.18)
    phase = (np.cos(angle) * c.xx + np.sin(angle) * c.yy) % period < period / 2
    return np.where(phase[..., None], muted_colour(rng), muted_colour(rng))


def checker(c: Canvas, rng: np.random.Generator) -> np.ndarray:
    cell = c.size * rng.uniform(0.07, 0.14)
    odd = (np.floor(c.yy / cell) + np.floor(c.xx / cell)) % 2 == 1
    return np.where(odd[..., None], muted_colour(rng), muted_colour(rng))


def dots(c: Canvas, rng: np.random.Generator) -> np.ndarray:
    period = c.size * rng.uniform(0.1, 0.16)
    dy, dx = (c.yy % period) - period / 2, (c.xx % period) - period / 2
    spot = dy**2 + dx**2 <= (0.3 * period) ** 2
    return np.where(spot[..., None], muted_colour(rng, 0.35), muted_colour(rng))


DISTRACTOR_TEXTURES = (bricks, sand, stripes, checker, dots)


def draw_ground(c: Canvas, rng: np.random.Generator, x0: float, x1: float, height: float) -> None:
    """A band of one clutter texture along the bottom of x0..x1: pavement, sand, a field."""
    texture = DISTRACTOR_TEXTURES[int(rng.integers(len(DISTRACTOR_TEXTURES)))](c, rng)
    c.paint(box(c, c.size - height, x0, c.size, x1), texture)


def draw_clutter(c: Canvas, rng: np.random.Generator) -> None:
    """A pale base tone of any hue with noise, one or two distractor textures, a few shapes.

    Backgrounds come in every colour, so no colour by itself is class evidence: a grey-only
    background made grey aeroplanes the answer for every image without a class.
    """
    size = c.size
    tone = muted_colour(rng, saturation=0.25)
    c.rgb[:] = _shade(tone, 0.8 + 0.4 * smooth_noise(rng, size, 4))
    for _ in range(int(rng.integers(1, 3))):
        texture = DISTRACTOR_TEXTURES[int(rng.integers(len(DISTRACTOR_TEXTURES)))](c, rng)
        if rng.random() < 0.35:  # a band, like a cue, so band geometry alone is no cue
            extent = size * rng.uniform(0.2, 0.4)
            mask = c.yy < extent if rng.random() < 0.5 else c.yy > size - extent
        else:
            h, w = size * rng.uniform(0.2, 0.45, 2)
            y0, x0 = rng.uniform(0, size - h), rng.uniform(0, size - w)
            mask = box(c, y0, x0, y0 + h, x0 + w)
        c.paint(mask, texture)
    for _ in range(int(rng.integers(2, 6))):
        # half the shapes are things of any colour that are no class (a red door, a blue bin):
        # each pulls a scene without any class a little towards some class, never the same one
        colour = vivid_colour(rng) if rng.random() < 0.5 else muted_colour(rng, 0.4)
        r = size * rng.uniform(0.05, 0.12)
        cy, cx = rng.uniform(0, size, 2)
        kind = rng.integers(3)
        if kind == 0:
            mask = ellipse(c, cy, cx, r, r * rng.uniform(0.6, 1.6))
        elif kind == 1:
            mask = box(c, cy - r, cx - r * 1.3, cy + r, cx + r * 1.3)
        else:
            mask = polygon(c, [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)])
        c.paint(mask, colour)


# ---- context cues: each paints its band (x0..x1, y0..y1) and returns the pixels it covered ------


def rails(c: Canvas, rng: np.random.Generator, x0, x1, y0, y1) -> np.ndarray:
    region = box(c, y0, x0, y1, x1)
    gravel = _shade(
        jitter(rng, (0.45, 0.32, 0.2)), rng.uniform(0.75, 1.2, c.yy.shape).astype(np.float32)
    )
    c.paint(region, gravel)
    band = y1 - y0
    period = c.size * rng.uniform(0.08, 0.11)
    ties = (c.xx + rng.uniform(0, period)) % period < 0.45 * period
    ties &= (c.yy > y0 + 0.12 * band) & (c.yy < y1 - 0.05 * band)
    c.paint(region & ties, jitter(rng, (0.22, 0.13, 0.07), 0.04))
    thick = max(1.0, 0.04 * c.size)
    for frac in (0.3, 0.75):
        rail_y = y0 + frac * band
        c.paint(
            region & (np.abs(c.yy - rail_y) < thick / 2 + 0.01),
            jitter(rng, (0.75, 0.75, 0.78), 0.05),
        )
    return region


def water(c: Canvas, rng: np.random.Generator, x0, x1, y0, y1) -> np.ndarray:
    wave_x = c.size * rng.uniform(0.25, 0.45)
    edge = y0 + 0.04 * c.size * np.sin(2 * np.pi * c.xx / wave_x + rng.uniform(0, 2 * np.pi))
    region = box(c, 0, x0, y1, x1) & (c.yy >= edge)
    c.paint(region, jitter(rng, (0.1, 0.3, 0.65)))
    lam = c.size * rng.uniform(0.07, 0.1)
    wave = np.sin(2 * np.pi * c.yy / lam + 1.5 * np.sin(2 * np.pi * c.xx / wave_x))
    c.paint(region & (wave > 0.55), jitter(rng, (0.4, 0.62, 0.9)))
    c.paint(region & (wave < -0.75), jitter(rng, (0.05, 0.18, 0.45)))
    return region


def sky(c: Canvas, rng: np.random.Generator, x0, x1, y0, y1) -> np.ndarray:
    region = box(c, y0, x0, y1, x1)
    t = np.clip((c.yy - y0) / max(y1 - y0, 1.0), 0, 1)[..., None]
    top, bottom = jitter(rng, (0.35, 0.58, 0.92), 0.04), jitter(rng, (0.72, 0.86, 1.0), 0.03)
    c.paint(region, (1 - t) * top + t * bottom)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(y0, y1), rng.uniform(x0, x1)
        r = c.size * rng.uniform(0.04, 0.07)
        puffs = ellipse(c, cy, cx, r, 2.2 * r) | ellipse(c, cy - 0.7 * r, cx + 0.5 * r, r, r * 1.2)
        c.paint(region & puffs, jitter(rng, (0.97, 0.97, 0.98), 0.02))
    return region


def grass(c: Canvas, rng: np.random.Generator, x0, x1, y0, y1) -> np.ndarray:
    blade = c.size * rng.uniform(0.03, 0.06)
    tips = rng.uniform(0, 1, (1, c.size)).astype(np.float32) * blade  # a ragged top edge
    region = box(c, 0, x0, y1, x1) & (c.yy >= y0 - tips)
    rows = -(-c.size // 3)
    streaks = np.repeat(rng.uniform(0.6, 1.35, (rows, c.size)), 3, axis=0)[: c.size]
    c.paint(region, _shade(jitter(rng, (0.22, 0.55, 0.14)), streaks.astype(np.float32)))
    return region


def road(c: Canvas, rng: np.random.Generator, x0, x1, y0, y1) -> np.ndarray:
    region = box(c, y0, x0, y1, x1)
    grain = rng.uniform(0.85, 1.15, c.yy.shape).astype(np.float32)
    c.paint(region, _shade(jitter(rng, (0.24, 0.24, 0.26), 0.03), grain))
    thick = max(1.0, 0.035 * c.size)
    c.paint(region & (np.abs(c.yy - (y0 + 0.12 * (y1 - y0))) < thick / 2 + 0.01), (0.92, 0.92, 0.9))
    period = c.size * rng.uniform(0.18, 0.26)
    dash = (c.xx + rng.uniform(0, period)) % period < 0.55 * period
    centre = np.abs(c.yy - (y0 + 0.6 * (y1 - y0))) < thick / 2 + 0.01
    c.paint(region & dash & centre, jitter(rng, (0.98, 0.85, 0.2), 0.03))
    return region


def foliage(c: Canvas, rng: np.random.Generator, x0, x1, y0, y1) -> np.ndarray:
    """Autumn canopy: mottled red-brown, orange and yellow leaves with dark branches."""
    region = box(c, y0, x0, y1, x1)
    mottle = 0.6 * smooth_noise(rng, c.size, c.size // 4) + 0.4 * rng.random(c.yy.shape)
    palette = [
        jitter(rng, rgb, 0.04) for rgb in ((0.4, 0.12, 0.05), (0.9, 0.45, 0.08), (0.95, 0.8, 0.2))
    ]
    levels = [(mottle < 0.42)[..., None], (mottle < 0.6)[..., None]]
    leaves = np.select(levels, palette[:2], palette[2]).astype(np.float32)
    c.paint(region, leaves)
    for _ in range(int(rng.integers(1, 3))):
        slope = rng.uniform(-0.6, 0.6)
        line = np.abs(c.yy - (rng.uniform(y0, y1) + slope * (c.xx - c.size / 2)))
        c.paint(region & (line < max(0.6, 0.025 * c.size)), (0.2, 0.12, 0.06))
    return region


CUE_PAINTERS = (rails, water, sky, grass, road, foliage)


# ---- objects: drawn in a pose frame, lengths in units of the object width ---------------------


@dataclass(frozen=True)
class Pose:
    """Where an object sits: centre (cy, cx) in pixels, width s, facing f (+1 right, -1 left).

    Shapes take (v, u) offsets from the centre in units of s: v down, u towards the facing side.
    """

    cy: float
    cx: float
    s: float
    f: int

    def at(self, v: float, u: float) -> tuple[float, float]:
        return self.cy + v * self.s, self.cx + self.f * u * self.s

    def poly(self, c: Canvas, *vu: tuple[float, float]) -> np.ndarray:
        return polygon(c, [self.at(v, u)[::-1] for v, u in vu])

    def ellipse(self, c: Canvas, v: float, u: float, rv: float, ru: float) -> np.ndarray:
        return ellipse(c, *self.at(v, u), rv * self.s, ru * self.s)

    def box(self, c: Canvas, v0: float, u0: float, v1: float, u1: float) -> np.ndarray:
        (y0, xa), (y1, xb) = self.at(v0, u0), self.at(v1, u1)
        return box(c, y0, min(xa, xb), y1, max(xa, xb))

    def thin(self, width: float) -> float:
        """A stroke half-width in units of s, never below half a pixel."""
        return max(width, 0.5 / self.s)


def train(c: Canvas, rng: np.random.Generator, p: Pose) -> np.ndarray:
    colour = jitter(rng, [(0.75, 0.1, 0.1), (0.45, 0.06, 0.1), (0.22, 0.2, 0.26)][rng.integers(3)])
    body = p.box(c, -0.3, 0.05, 0.21, 0.35) | p.box(c, -0.13, -0.5, 0.21, 0.5)  # cab | carriage
    c.paint(body, colour)
    windows = p.box(c, -0.06, -0.44, 0.07, 0.44) & ((c.xx - p.cx + p.s / 2) % (p.s / 4) > p.s / 9)
    c.paint(windows, jitter(rng, (0.98, 0.9, 0.45), 0.03))
    wheels = p.ellipse(c, 0.23, -0.33, 0.07, 0.1) | p.ellipse(c, 0.23, 0.0, 0.07, 0.1)
    wheels |= p.ellipse(c, 0.23, 0.33, 0.07, 0.1)
    c.paint(wheels, (0.08, 0.08, 0.08))
    return body | wheels


def boat(c: Canvas, rng: np.random.Generator, p: Pose) -> np.ndarray:
    """A white hull with a red band and a striped sail: colours no clutter texture has."""
    hull = p.poly(c, (0.18, -0.5), (0.18, 0.5), (0.45, 0.33), (0.45, -0.33))
    c.paint(hull, jitter(rng, (0.95, 0.95, 0.93), 0.03))
    c.paint(
        hull & (np.abs(c.yy - p.at(0.27, 0)[0]) < max(0.7, 0.05 * p.s)),
        jitter(rng, (0.8, 0.12, 0.1), 0.05),
    )
    mast = p.box(c, -0.45, -0.05 - p.thin(0.025), 0.18, -0.05 + p.thin(0.025))
    sail = p.poly(c, (-0.43, -0.05), (0.13, -0.05), (0.13, 0.4))
    jib = p.poly(c, (-0.27, -0.05), (0.13, -0.05), (0.13, -0.35))
    period = max(2.0, 0.14 * p.s)
    bands = (c.yy - p.cy) % period < period / 2
    stripe = jitter(rng, [(0.12, 0.2, 0.6), (0.85, 0.15, 0.15)][rng.integers(2)], 0.05)
    c.paint(sail | jib, jitter(rng, (0.97, 0.96, 0.92), 0.02))
    c.paint((sail | jib) & bands, stripe)
    c.paint(mast, (0.15, 0.1, 0.05))
    return hull | mast | sail | jib


def aeroplane(c: Canvas, rng: np.random.Generator, p: Pose) -> np.ndarray:
    """Seen from below: a white fuselage, swept wings and tailplane with coloured tips."""
    fuselage = p.ellipse(c, 0, 0, 0.09, 0.5)
    wings = np.zeros_like(fuselage)
    for side in (-1, 1):
        wings |= p.poly(c, (0, 0.14), (0, -0.06), (side * 0.33, -0.2), (side * 0.33, -0.08))
        wings |= p.poly(c, (0, -0.36), (0, -0.46), (side * 0.18, -0.5), (side * 0.18, -0.42))
    c.paint(fuselage | wings, jitter(rng, (0.93, 0.94, 0.96), 0.03))
    livery = jitter(rng, [(0.8, 0.1, 0.15), (0.1, 0.25, 0.7)][rng.integers(2)], 0.05)
    c.paint(wings & (np.abs(c.yy - p.cy) > 0.2 * p.s), livery)  # coloured wing tips
    c.paint(p.ellipse(c, 0, 0.38, 0.05, 0.08), (0.1, 0.12, 0.2))  # cockpit
    return fuselage | wings


def sheep(c: Canvas, rng: np.random.Generator, p: Pose) -> np.ndarray:
    legs = np.zeros(c.yy.shape, bool)
    for u in (-0.28, -0.12, 0.1, 0.24):
        legs |= p.box(c, -0.05, u - p.thin(0.03), 0.33, u + p.thin(0.03))
    c.paint(legs, (0.12, 0.1, 0.08))
    wool = np.zeros_like(legs)
    white = jitter(rng, (0.93, 0.93, 0.9), 0.04)
    for angle in np.linspace(0, 2 * np.pi, 7)[:-1] + rng.uniform(0, 1):
        puff = p.ellipse(c, -0.05 + 0.12 * np.sin(angle), -0.05 + 0.25 * np.cos(angle), 0.18, 0.18)
        c.paint(puff, white * rng.uniform(0.9, 1.05))  # uneven fleece
        wool |= puff
    head = p.ellipse(c, -0.13, 0.4, 0.14, 0.11)
    c.paint(head, (0.15, 0.12, 0.1))
    return legs | wool | head


def car(c: Canvas, rng: np.random.Generator, p: Pose) -> np.ndarray:
    body = p.box(c, -0.1, -0.5, 0.15, 0.5)
    cabin = p.poly(c, (-0.1, -0.3), (-0.1, 0.3), (-0.25, 0.18), (-0.25, -0.22))
    c.paint(body | cabin, jitter(rng, [(0.95, 0.8, 0.1), (0.95, 0.55, 0.05)][rng.integers(2)]))
    c.paint(cabin & p.box(c, -0.2, -0.2, -0.1, 0.2), (0.6, 0.8, 0.95))
    wheels = p.ellipse(c, 0.15, -0.28, 0.1, 0.12) | p.ellipse(c, 0.15, 0.28, 0.1, 0.12)
    c.paint(wheels, (0.06, 0.06, 0.06))
    return body | cabin | wheels


def bird(c: Canvas, rng: np.random.Generator, p: Pose) -> np.ndarray:
    colour = jitter(rng, (0.35, 0.3, 0.85))
    body = p.ellipse(c, 0.07, -0.05, 0.175, 0.32) | p.ellipse(c, -0.14, 0.27, 0.14, 0.14)
    body |= p.poly(c, (0.07, -0.3), (-0.035, -0.5), (0.21, -0.5))  # tail
    beak = p.poly(c, (-0.18, 0.38), (-0.08, 0.38), (-0.13, 0.5))
    c.paint(body, colour)
    c.paint(p.ellipse(c, 0.035, -0.12, 0.09, 0.2), colour * 0.55)  # wing
    c.paint(beak, (1.0, 0.6, 0.1))
    c.paint(p.ellipse(c, -0.15, 0.3, 0.04, 0.04), (0.02, 0.02, 0.02))  # eye
    return body | beak


OBJECT_PAINTERS = (train, boat, aeroplane, sheep, car, bird)


# ---- scene layout -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One class's share of an image: its object and/or its cue."""

    class_index: int
    with_object: bool
    with_cue: bool


@dataclass(frozen=True)
class SceneStyle:
    object_size: tuple[float, float] = (0.35, 0.5)  # object width, fraction of the image side
    cue_extent: tuple[float, float] = (0.3, 0.5)  # cue band height, fraction of the image side
    pixel_noise: float = 0.03
    brightness_jitter: float = 0.15
    p_ground: float = 0.0  # chance of a ground band under a span whose bottom holds no cue


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    class_mask: np.ndarray  # (H, W) uint8: 0 background, k + 1 object of class k, 255 its edge
    cue_mask: np.ndarray  # (H, W) uint8: 0 none, k + 1 cue of class k (never on an object)
    objects: tuple[int, ...]  # 0-based class indices of the objects drawn
    cues: tuple[int, ...]  # 0-based class indices of the cues drawn


def object_edges(labels: np.ndarray) -> np.ndarray:
    """Object pixels with a 4-neighbour of another label: VOC's ignore band, one pixel wide."""
    padded = np.pad(labels, 1, mode="edge")
    h, w = labels.shape
    differs = np.zeros(labels.shape, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        differs |= padded[dy : dy + h, dx : dx + w] != labels
    return differs & (labels > 0)


def draw_scene(rng: np.random.Generator, size: int, slots: list[Slot], style: SceneStyle) -> Scene:
    """Clutter, then each slot's cue band, then its object standing on (or flying in) the cue.

    One slot owns the whole width; two slots split the image into a left and a right part. The
    layout is drawn even for a slot without cue, so object position alone does not reveal it.
    """
    c = Canvas.blank(size)
    draw_clutter(c, rng)
    edges = (
        [0.0, size * rng.uniform(0.42, 0.58), float(size)]
        if len(slots) == 2
        else [0.0, float(size)]
    )
    # a ground under every span whose bottom holds no cue (a sky class, or no class at all):
    # clutter textures as bands, so the lower half of an image says nothing about its class
    bottoms = [CUE_SIDES[s.class_index] == "bottom" and s.with_cue for s in slots] or [False]
    for i, taken in enumerate(bottoms):
        if not taken and rng.random() < style.p_ground:
            draw_ground(c, rng, edges[i], edges[i + 1], size * rng.uniform(*style.cue_extent))
    layouts = []
    for i, slot in enumerate(slots):
        k, (x0, x1) = slot.class_index, edges[i : i + 2]
        band = size * rng.uniform(*style.cue_extent)
        s = min(size * rng.uniform(*style.object_size), 0.95 * (x1 - x0))
        h = OBJECT_ASPECTS[k] * s
        cx = rng.uniform(x0 + s / 2, x1 - s / 2)
        if CUE_SIDES[k] == "bottom":
            y0, y1 = size - band, float(size)
            cy = rng.uniform(y0 + 0.35 * band, size - 0.5) - h / 2  # stands on the band
        else:
            y0, y1 = 0.0, band
            cy = rng.uniform(h / 2 + 0.5, max(h / 2 + 0.5, band - 0.25 * h))  # inside the band
        layouts.append((slot, x0, x1, y0, y1, cy, cx, s, 1 if rng.random() < 0.5 else -1))
    cue = np.zeros((size, size), np.uint8)
    for slot, x0, x1, y0, y1, *_ in layouts:
        if slot.with_cue:
            cue[CUE_PAINTERS[slot.class_index](c, rng, x0, x1, y0, y1)] = slot.class_index + 1
    labels = np.zeros((size, size), np.uint8)
    for slot, *_, cy, cx, s, f in layouts:
        if slot.with_object:
            labels[OBJECT_PAINTERS[slot.class_index](c, rng, Pose(cy, cx, s, f))] = (
                slot.class_index + 1
            )
    cue[labels > 0] = 0
    class_mask = labels.copy()
    class_mask[object_edges(labels)] = 255
    rgb = c.rgb * (1.0 + rng.uniform(-style.brightness_jitter, style.brightness_jitter))
    rgb = rgb + rng.normal(0.0, style.pixel_noise, rgb.shape)
    image = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Scene(
        image=image,
        class_mask=class_mask,
        cue_mask=cue,
        objects=tuple(s.class_index for s in slots if s.with_object),
        cues=tuple(s.class_index for s in slots if s.with_cue),
    )
