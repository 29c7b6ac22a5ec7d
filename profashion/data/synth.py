"""Synthetic garments: the embedded default dataset, with a ground-truth mask of every attribute.

Each image shows one mannequin-like figure wearing an outfit drawn with PIL. The labels mirror
FashionAI's eight local attributes plus two global ones (DeepFashion-like), in this order
(:data:`SYNTH_SCHEMA`):

=================  ========================================================================
attribute          what the value looks like in the picture
=================  ========================================================================
skirt_length       where the hem of the skirt (or of a dress's skirt) ends along the legs
sleeve_length      how far the sleeve extends along the arm (coat sleeves when a coat is worn)
coat_length        where the hem of the open coat ends (above the waist ... ankle)
pant_length        where the trouser legs end (thigh ... ankle)
collar_design      a small collar at the neck: pointed wings, round lobes, a wide flat collar, a band
lapel_design       the coat's lapels: notched, peaked, a smooth shawl, or none (collarless)
neckline_design    the shape cut out at the neck: round, V, deep V, square, straight
neck_design        a piece around the neck: tall / low turtle, ruffled band, draped folds
texture            the fabric pattern of the whole outfit: solid, stripes, dots, checks, floral
colour             the colour of the whole outfit (black, white, red, yellow, green, blue)
=================  ========================================================================

Value 0 of each of the eight local attributes is ``"Invisible"``: the outfit does not show that part
(no skirt, no coat, a bare upper body, a top whose neck carries a collar rather than a neckline...).
It is an ordinary retrievable class, as in FashionAI.

**How it is drawn.** The figure is first painted as a label map (one id per body or garment part,
in painting order: legs, torso, head, trousers, top, skirt, neck details, coat, arms, sleeves); the
colours come from a look-up of (part, fabric pattern, outline) and the masks from a look-up of part
to attribute bits, so the picture and its masks cannot disagree. Local details (collars, necklines,
lapels, neck pieces) are drawn somewhat larger than life so that their values stay distinguishable
at ~96-112 px, yet each covers only 4-9% of the outfit (sleeves ~14%).

**Why values are independent.** The outfit is sampled first (which garments are worn: top / dress /
bare upper body, skirt / trousers / bare legs, with or without an open coat; and which of neckline,
collar or neck piece the top shows). That decides which attributes are visible. Every visible
attribute then draws its value uniformly and independently of the others, and colour and texture are
independent of everything. So no single unconditional embedding can order the images by all
attributes at once: a model has to be told which attribute it is asked about. Colour and texture
cover the whole outfit, so they are large global nuisances for the small local attributes (the
neckline is a few pixels), and vice versa.

**Difficulty.** Pose (arm and forearm angles, leg spread), scale (figure height 55-95% of the image),
position, body proportions, skin tone (including mannequin greys), hair, background (plain, gradient,
stripes, wall and floor), 2-6 clutter shapes behind and in front of the figure (half of them in the
garment palette), an occluding block on some images, a brightness/contrast gradient and noise.
Everything is drawn in coordinates relative to the figure, at twice the output size, and reduced by a
2x2 box filter: any output size works.

**Masks.** Beside ``images/<split>/<i>.png`` lies ``masks/<split>/<i>.png``: a 16-bit grayscale PNG
whose bit ``a`` is set where attribute ``a`` lives in the picture (:func:`load_attribute_masks`):

- skirt / coat / pant length: the visible pixels of the skirt / the coat body with its lapels / the
  trousers; sleeve length: the sleeve pixels (for sleeveless garments, the shoulder region: the
  armhole and the top of the bare arm);
- collar, neck design: the collar / neck-piece pixels; lapel design: the lapel pixels (collarless:
  the coat's front edge where lapels would be); neckline design: the region around the neck opening
  (garment edge and the skin it shows);
- texture, colour: every garment pixel.

Masks are taken after everything is drawn, so pixels hidden by another garment, a clutter shape or
an occluder are excluded. They are computed on the 2x drawing and an output pixel is in a mask when
the attribute covers any part of it (thin parts stay visible at 32 px). Things in front of the figure
never hide more than 60% of an attribute region (a candidate that would is dropped), so a visible
attribute always has a non-empty mask; an ``"Invisible"`` value has an empty one.

**Determinism.** Image ``i`` of split ``k`` is drawn from its own ``numpy.random.Generator`` seeded
with ``SeedSequence([seed, k, i])``: the output is byte-identical for a seed whatever the order of
generation or the number of worker processes. The dataset is written to a temporary folder beside
the destination and renamed into place, so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import io
import math
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from profashion.data import splits
from profashion.data.masks import attribute_mask, load_attribute_masks  # noqa: F401 - re-exported
from profashion.data.splits import AttributeSchema, DatasetError
from profashion.io import atomic_folder, check_output_folder

__all__ = [
    "ATTRIBUTE_KIND",
    "COLOURS",
    "GENERATOR_VERSION",
    "SYNTH_SCHEMA",
    "Sample",
    "attribute_mask",
    "generate_synth",
    "image_rng",
    "load_attribute_masks",
    "render_garment",
]

GENERATOR_VERSION = 2
MIN_SIZE, MAX_SIZE = 32, 1024

# --------------------------------------------------------------------------------------------------
# Schema

_INV = "Invisible"
SYNTH_SCHEMA = AttributeSchema(
    names=(
        "skirt_length", "sleeve_length", "coat_length", "pant_length",
        "collar_design", "lapel_design", "neckline_design", "neck_design",
        "texture", "colour",
    ),
    values=(
        (_INV, "Short Length", "Knee Length", "Midi Length", "Ankle Length", "Floor Length"),
        (_INV, "Sleeveless", "Cup Sleeves", "Short Sleeves", "Elbow Sleeves", "3/4 Sleeves", "Long Sleeves"),
        (_INV, "High Waist Length", "Regular Length", "Knee Length", "Midi Length", "Ankle&Floor Length"),
        (_INV, "Short Pant", "Mid Length", "3/4 Length", "Cropped Pant", "Full Length"),
        (_INV, "Shirt Collar", "Peter Pan", "Puritan Collar", "Rib Collar"),
        (_INV, "Notched", "Collarless", "Shawl Collar", "Peak Lapel"),
        (_INV, "Round Neckline", "V Neck", "Deep V Neckline", "Square Neckline", "Straight Neck"),
        (_INV, "Turtle Neck", "Ruffle Semi-High Collar", "Low Turtle Neck", "Draped Collar"),
        ("solid", "stripes", "dots", "checks", "floral"),
        ("black", "white", "red", "yellow", "green", "blue"),
    ),
)
ATTRIBUTE_KIND = {n: ("global" if n in ("texture", "colour") else "local") for n in SYNTH_SCHEMA.names}
NUM_ATTRIBUTES = SYNTH_SCHEMA.num_attributes
(A_SKIRT, A_SLEEVE, A_COAT, A_PANT, A_COLLAR, A_LAPEL, A_NECKLINE, A_NECK, A_TEXTURE, A_COLOUR) = range(10)
LOCAL_ATTRIBUTES = tuple(range(8))

# Named garment colours (well separated in hue / lightness); each image jitters its colour slightly.
COLOURS = {
    "black": (32, 32, 36), "white": (236, 236, 230), "red": (196, 30, 40),
    "yellow": (238, 198, 32), "green": (34, 138, 62), "blue": (36, 76, 190),
}
_COLOUR_RGB = np.array([COLOURS[n] for n in SYNTH_SCHEMA.values[A_COLOUR]], dtype=np.float64)
_SKIN = np.array([(241, 206, 180), (224, 172, 138), (198, 134, 98), (141, 85, 55), (92, 58, 40),
                  (228, 222, 212), (176, 178, 184)], dtype=np.float64)
_HAIR = np.array([(24, 20, 18), (84, 52, 30), (196, 160, 96), (150, 150, 150)], dtype=np.float64)

# --------------------------------------------------------------------------------------------------
# Part labels: the figure is first painted as a label map; colours and masks both come from it.

(L_BG, L_SKIN, L_HAIR, L_SHOE, L_TOP, L_TOP_SLEEVE, L_SKIRT, L_PANTS, L_COAT, L_COAT_SLEEVE, L_LAPEL,
 L_COLLAR, L_COLLAR_LINE, L_NECK, L_NECK_LINE, L_FRONT) = range(16)
_NUM_LABELS = 16
_GARMENT = list(range(L_TOP, L_NECK_LINE + 1))
# How far each garment part's colour moves away from the base colour (coats darker, trims stronger).
_TONE = {L_TOP: 0.0, L_TOP_SLEEVE: 0.0, L_SKIRT: 0.08, L_PANTS: 0.14, L_COAT: 0.24, L_COAT_SLEEVE: 0.24,
         L_LAPEL: 0.4, L_COLLAR: 0.55, L_COLLAR_LINE: 0.85, L_NECK: 0.1, L_NECK_LINE: 0.5}
_SOLID = (L_LAPEL, L_COLLAR, L_COLLAR_LINE, L_NECK_LINE)  # trims are plain, without the fabric pattern

_G = (1 << A_TEXTURE) | (1 << A_COLOUR)
_BITS = np.zeros(256, dtype=np.uint16)
_BITS[L_TOP] = _G
_BITS[L_TOP_SLEEVE] = _BITS[L_COAT_SLEEVE] = _G | (1 << A_SLEEVE)
_BITS[L_SKIRT] = _G | (1 << A_SKIRT)
_BITS[L_PANTS] = _G | (1 << A_PANT)
_BITS[L_COAT] = _G | (1 << A_COAT)
_BITS[L_LAPEL] = _G | (1 << A_COAT) | (1 << A_LAPEL)
_BITS[L_COLLAR] = _BITS[L_COLLAR_LINE] = _G | (1 << A_COLLAR)
_BITS[L_NECK] = _BITS[L_NECK_LINE] = _G | (1 << A_NECK)

# Value geometry, in figure units (figure height = 1, y down from the top of the head).
_SKIRT_HEM = (0.0, 0.585, 0.705, 0.805, 0.905, 0.985)
_COAT_HEM = (0.0, 0.335, 0.505, 0.70, 0.815, 0.945)
_PANT_T = (0.0, 0.2, 0.45, 0.65, 0.82, 1.0)  # fraction of the leg from hip joint to ankle
_UPPER_ARM, _FOREARM = 0.165, 0.15


# --------------------------------------------------------------------------------------------------
# Masks: read by profashion.data.masks (re-exported here for old imports)



# --------------------------------------------------------------------------------------------------
# Sampling the outfit (labels first; drawing randomness comes after, from the same generator)


@dataclass
class Sample:
    """One rendered image: RGB pixels, the 16-bit attribute mask, and the value of every attribute."""

    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint16, bit a = attribute a
    values: tuple[int, ...]  # one value index per attribute of SYNTH_SCHEMA


# Outfit probabilities. Together they decide how often each local attribute is visible: sleeves
# ~88% of images, skirt ~53%, trousers ~38%, coat and lapels ~40%, neckline ~35%, collar and neck ~26%.
_P_UPPER = {"none": 0.12, "top": 0.63, "dress": 0.25}
_P_LOWER_WITH_TOP = {"skirt": 0.35, "pants": 0.5, "none": 0.15}
_P_COAT = 0.45
_P_NECK = {A_NECKLINE: 0.4, A_COLLAR: 0.3, A_NECK: 0.3}  # what the top shows at the neck


def _sample_values(rng: np.random.Generator) -> tuple[list[int], dict]:
    """The outfit (which garments, hence which attributes are visible), then one value per attribute.

    Each visible attribute takes a value uniformly and independently of all the others.
    """
    upper = list(_P_UPPER)[rng.choice(len(_P_UPPER), p=list(_P_UPPER.values()))]
    if upper == "top":
        lower = list(_P_LOWER_WITH_TOP)[rng.choice(3, p=list(_P_LOWER_WITH_TOP.values()))]
    elif upper == "none":  # a bare upper body: the picture is about the skirt or the trousers
        lower = ("skirt", "pants")[rng.integers(2)]
    else:
        lower = "skirt"  # the dress's own skirt
    coat = upper != "none" and bool(rng.random() < _P_COAT)
    visible = {A_TEXTURE, A_COLOUR}
    if lower == "skirt":
        visible.add(A_SKIRT)
    if lower == "pants":
        visible.add(A_PANT)
    if upper != "none":
        visible.add(A_SLEEVE)
        visible.add(list(_P_NECK)[rng.choice(len(_P_NECK), p=list(_P_NECK.values()))])
    if coat:
        visible |= {A_COAT, A_LAPEL}
    nv = SYNTH_SCHEMA.num_values
    values = [0] * NUM_ATTRIBUTES
    for a in sorted(visible):
        local = a not in (A_TEXTURE, A_COLOUR)
        values[a] = int(rng.integers(1 if local else 0, nv[a]))  # value 0 of a local attribute: Invisible
    return values, {"upper": upper, "lower": lower, "coat": coat}


# --------------------------------------------------------------------------------------------------
# Small geometry helpers (figure units)


def _mirror(pts):
    return [(-x, y) for x, y in pts]


def _sym(half):
    """A left-right symmetric polygon from its right half (a path from the centre line to the centre line)."""
    return list(half) + [(-x, y) for x, y in reversed(half)]


def _cut(path, y_end):
    """The part of a downward path above ``y_end``, ending exactly at ``y_end``."""
    out = [path[0]]
    for (x0, y0), (x1, y1) in zip(path, path[1:]):
        if y1 >= y_end:
            t = 0.0 if y1 == y0 else (y_end - y0) / (y1 - y0)
            out.append((x0 + t * (x1 - x0), y_end))
            return out
        out.append((x1, y1))
    out.append((path[-1][0], y_end))
    return out


def _quad(p0, p1, h0, h1):
    """A tapered segment from p0 (half width h0) to p1 (half width h1)."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    n = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / n, dx / n
    return [(p0[0] + nx * h0, p0[1] + ny * h0), (p1[0] + nx * h1, p1[1] + ny * h1),
            (p1[0] - nx * h1, p1[1] - ny * h1), (p0[0] - nx * h0, p0[1] - ny * h0)]


def _mix(c, target, t):
    return np.asarray(c, np.float64) * (1 - t) + np.asarray(target, np.float64) * t


def _lum(c):
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _away(c, t):
    """Move a colour by ``t`` towards black (light colours) or white (dark ones): a visible shade."""
    return _mix(c, (0, 0, 0) if _lum(c) > 105 else (255, 255, 255), t)


class _Painter:
    """Draws figure-unit shapes onto the label map (at twice the output size)."""

    def __init__(self, size2: int, cx: float, top: float, scale: float):
        self.size2, self.cx, self.top, self.s = size2, cx, top, scale
        self.im = Image.new("L", (size2, size2), L_BG)
        self.draw = ImageDraw.Draw(self.im)

    def xy(self, pts):
        cx, top, s = self.cx, self.top, self.s
        return [(cx + x * s, top + y * s) for x, y in pts]

    def poly(self, pts, label):
        self.draw.polygon(self.xy(pts), fill=label)

    def box(self, x, y, rx, ry):
        return [self.cx + (x - rx) * self.s, self.top + (y - ry) * self.s,
                self.cx + (x + rx) * self.s, self.top + (y + ry) * self.s]

    def ellipse(self, x, y, rx, ry, label):
        self.draw.ellipse(self.box(x, y, rx, ry), fill=label)

    def chord(self, x, y, rx, ry, start, end, label):
        self.draw.chord(self.box(x, y, rx, ry), start, end, fill=label)

    def arc(self, x, y, rx, ry, start, end, width, label):
        self.draw.arc(self.box(x, y, rx, ry), start, end, fill=label, width=max(1, round(width * self.s)))

    def line(self, pts, width, label):
        self.draw.line(self.xy(pts), fill=label, width=max(1, round(width * self.s)), joint="curve")

    def zone(self, x0, y0, x1, y1):
        """A figure-unit rectangle as (row, column) slices of the label map, clipped to it."""
        n, cx, top, s = self.size2, self.cx, self.top, self.s
        cols = slice(int(np.clip(math.floor(cx + x0 * s), 0, n)), int(np.clip(math.ceil(cx + x1 * s), 0, n)))
        rows = slice(int(np.clip(math.floor(top + y0 * s), 0, n)), int(np.clip(math.ceil(top + y1 * s), 0, n)))
        return rows, cols


# --------------------------------------------------------------------------------------------------
# Textures and backgrounds


def _pattern(rng, kind: int, shape: tuple[int, int], scale: float) -> np.ndarray:
    """(h, w) uint8 pattern index: 0 base colour, 1 pattern colour, 2 accent colour.

    ``scale`` is the figure height in pixels: stripes, checks, dots and flowers keep their size
    relative to the figure (with a floor of about 3 output pixels so they stay visible).
    """
    h, w = shape
    name = SYNTH_SCHEMA.values[A_TEXTURE][kind]
    if name == "solid":
        return np.zeros(shape, np.uint8)
    ay, ax = np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32)
    if name == "stripes":
        p = max(6.0, scale * rng.uniform(0.05, 0.07))
        duty, phase = rng.uniform(0.38, 0.55), rng.uniform(0, p)
        orient = int(rng.integers(4))  # horizontal, vertical, two diagonals
        if orient == 0:
            return np.repeat((((ay + phase) % p) < duty * p).astype(np.uint8)[:, None], w, axis=1)
        if orient == 1:
            return np.repeat((((ax + phase) % p) < duty * p).astype(np.uint8)[None, :], h, axis=0)
        u = np.add.outer(ay, ax if orient == 2 else -ax) * np.float32(0.7071) + np.float32(phase + w)
        return ((u % p) < duty * p).astype(np.uint8)
    if name == "checks":  # gingham: where both stripe sets cross, the accent colour
        p = max(8.0, scale * rng.uniform(0.07, 0.095))
        sy = ((ay + rng.uniform(0, p)) % p) < 0.5 * p
        sx = ((ax + rng.uniform(0, p)) % p) < 0.5 * p
        return np.add.outer(sy.astype(np.uint8), sx.astype(np.uint8))
    if name == "dots":  # a hexagonal grid of dots
        p = max(7.0, scale * rng.uniform(0.06, 0.08))
        r = p * rng.uniform(0.24, 0.32)
        tp = int(round(p))
        t = np.arange(2 * tp, dtype=np.float32)
        yy, xx = t[:, None], t[:tp][None, :]
        c = (tp - 1) / 2.0
        d1 = (yy - c) ** 2 + (xx - c) ** 2
        d2 = (yy - c - tp) ** 2 + ((xx + tp / 2.0) % tp - c) ** 2
        return _tile(((d1 <= r * r) | (d2 <= r * r)).astype(np.uint8), shape, rng)
    # floral: a tile of small flowers (petals in the pattern colour, a centre in the accent colour)
    fr = max(3.0, scale * rng.uniform(0.017, 0.024))
    tsize = int(round(fr * rng.uniform(5.5, 7.0)))
    tile_im = Image.new("L", (tsize, tsize), 0)
    d = ImageDraw.Draw(tile_im)
    for _ in range(int(rng.integers(2, 4))):
        fx, fy = rng.uniform(fr, tsize - fr, size=2)
        rot = rng.uniform(0, 2 * math.pi)
        pr = fr * 0.45
        for k in range(5):
            a = rot + k * 2 * math.pi / 5
            px, py = fx + 0.55 * fr * math.cos(a), fy + 0.55 * fr * math.sin(a)
            d.ellipse([px - pr, py - pr, px + pr, py + pr], fill=1)
        cr = fr * 0.3
        d.ellipse([fx - cr, fy - cr, fx + cr, fy + cr], fill=2)
    return _tile(np.asarray(tile_im), shape, rng)


def _tile(tile: np.ndarray, shape: tuple[int, int], rng) -> np.ndarray:
    th, tw = tile.shape
    oy, ox = int(rng.integers(th)), int(rng.integers(tw))
    h, w = shape
    reps = (h + oy) // th + 1, (w + ox) // tw + 1
    return np.tile(tile, reps)[oy:oy + h, ox:ox + w]


def _random_colour(rng, garment_like_p: float = 0.0) -> np.ndarray:
    if rng.random() < garment_like_p:
        return np.clip(_COLOUR_RGB[rng.integers(len(_COLOUR_RGB))] + rng.normal(0, 10, 3), 0, 255)
    c = rng.uniform(30, 235, 3)
    return _mix(c, (c.mean(),) * 3, rng.uniform(0.0, 0.7))  # mostly muted, sometimes saturated


def _background(rng, n: int) -> Image.Image:
    """Plain, gradient, wallpaper stripes, or wall and floor; sometimes in a garment colour."""
    c1 = _random_colour(rng, 0.12)
    c2 = _mix(c1, _random_colour(rng), rng.uniform(0.2, 0.6))
    kind = int(rng.integers(5))
    if kind == 0:  # plain
        return Image.new("RGB", (n, n), _colour_tuple(c1))
    if kind in (1, 2):  # vertical / horizontal gradient
        t = np.linspace(0, 1, n)[:, None]
        g = np.clip(c1 * (1 - t) + c2 * t, 0, 255).astype(np.uint8)
        g = np.repeat(g[:, None, :], n, axis=1) if kind == 1 else np.repeat(g[None, :, :], n, axis=0)
        return Image.fromarray(g)
    if kind == 3:  # stripes (wallpaper)
        p = n * rng.uniform(0.06, 0.2)
        m = ((np.arange(n) + rng.uniform(0, p)) % p) < p * rng.uniform(0.3, 0.7)
        row = np.where(m[:, None], c1, c2).astype(np.uint8)
        vertical = rng.random() < 0.6
        g = np.repeat(row[None], n, axis=0) if vertical else np.repeat(row[:, None], n, axis=1)
        return Image.fromarray(g)
    im = Image.new("RGB", (n, n), _colour_tuple(c1))  # wall and floor
    im.paste(_colour_tuple(c2), (0, int(n * rng.uniform(0.55, 0.9)), n, n))
    return im


def _shape(rng, cx, cy, r) -> tuple:
    """A random clutter shape around (cx, cy) of radius ~r: (kind, geometry), drawn by :func:`_draw_shape`."""
    kind = int(rng.integers(4))
    ry = r * rng.uniform(0.5, 1.4)
    if kind == 2:
        a = rng.uniform(0, 2 * math.pi)
        return "polygon", [(cx + r * math.cos(a + k * 2.094), cy + r * math.sin(a + k * 2.094)) for k in range(3)]
    if kind == 3:
        return "line", [(cx - r, cy - ry), (cx + r, cy + ry)], max(2, int(r * 0.3))
    return ("ellipse" if kind == 0 else "rectangle"), [cx - r, cy - ry, cx + r, cy + ry]


def _moved(shape: tuple, dx: float, dy: float) -> tuple:
    xy = shape[1]
    if isinstance(xy[0], tuple):
        moved = [(x + dx, y + dy) for x, y in xy]
    else:
        moved = [xy[0] + dx, xy[1] + dy, xy[2] + dx, xy[3] + dy]
    return (shape[0], moved, *shape[2:])


def _draw_shape(draw: ImageDraw.ImageDraw, shape: tuple, fill) -> None:
    if shape[0] == "line":
        draw.line(shape[1], fill=fill, width=shape[2])
    else:
        getattr(draw, shape[0])(shape[1], fill=fill)


# --------------------------------------------------------------------------------------------------
# Drawing one image


@dataclass
class _Body:
    """A mannequin's proportions and pose, in figure units (0 = top of the head, 1 = the floor)."""

    head_rx: float
    head_ry: float
    y0: float  # neck base
    nw: float  # neck half width
    ys: float  # shoulder line
    sw: float  # shoulder half width
    cw: float  # chest half width
    yw: float  # waist line
    ww: float  # waist half width
    yh: float  # hip line
    hw: float  # hip half width
    yc: float  # crotch
    thigh: float
    ankle_w: float
    arms: dict  # side -> (shoulder joint, elbow, wrist, upper-arm direction, forearm direction)
    legs: dict  # side -> (hip joint, ankle)
    reach: float  # half the figure's width, arms and legs included


def _sample_body(rng: np.random.Generator) -> _Body:
    head_ry = rng.uniform(0.056, 0.064)
    head_rx = head_ry * rng.uniform(0.74, 0.84)
    y0 = rng.uniform(0.158, 0.17)
    nw = rng.uniform(0.021, 0.027)
    ys = y0 + 0.02
    sw = rng.uniform(0.1, 0.122)
    cw = sw * rng.uniform(0.8, 0.88)
    yw, ww = rng.uniform(0.37, 0.395), rng.uniform(0.062, 0.078)
    yh, hw = rng.uniform(0.47, 0.49), rng.uniform(0.085, 0.102)
    hj_y = yh + 0.01
    thigh, ankle_w = hw * 0.5, rng.uniform(0.017, 0.021)
    arms, legs = {}, {}
    for sg in (1, -1):
        th1 = math.radians(rng.uniform(5, 42))
        th2 = min(math.radians(75), max(0.0, th1 + math.radians(rng.uniform(-12, 30))))
        sj = (sg * (sw - 0.013), ys + 0.012)
        el = (sj[0] + sg * _UPPER_ARM * math.sin(th1), sj[1] + _UPPER_ARM * math.cos(th1))
        wr = (el[0] + sg * _FOREARM * math.sin(th2), el[1] + _FOREARM * math.cos(th2))
        arms[sg] = (sj, el, wr, (sg * math.sin(th1), math.cos(th1)), (sg * math.sin(th2), math.cos(th2)))
        phi = math.radians(rng.uniform(1, 10))
        hj = (sg * thigh * 1.02, hj_y)
        an = (hj[0] + sg * (0.95 - hj_y) * math.tan(phi), 0.95)
        legs[sg] = (hj, an)
    reach = max(abs(arms[sg][2][0]) for sg in (1, -1)) + 0.03
    reach = max(reach, max(abs(legs[sg][1][0]) for sg in (1, -1)) + 0.05)
    return _Body(head_rx, head_ry, y0, nw, ys, sw, cw, yw, ww, yh, hw, yh + 0.045, thigh, ankle_w, arms, legs,
                 reach)


def _leg_x(b: _Body, sg: int, y: float) -> float:
    """|x| of leg ``sg``'s axis at height ``y`` (clamped at the hip joint)."""
    hj, an = b.legs[sg]
    return abs(hj[0] + max(0.0, y - hj[1]) / (an[1] - hj[1]) * (an[0] - hj[0]))


def render_garment(rng: np.random.Generator, size: int = 112) -> Sample:
    """Draw one synthetic garment image with its attribute masks and values, from ``rng`` alone.

    The parts are drawn back to front, each by its own function, in a fixed order: the random draws (and so
    the images of a seed) follow that order."""
    values, outfit = _sample_values(rng)
    n2 = 2 * size
    b = _sample_body(rng)

    # placement
    h = n2 * rng.uniform(0.55, 0.95)
    top = rng.uniform(0.02 * n2, max(0.02 * n2, 0.985 * n2 - h))
    half = b.reach * h
    cx = rng.uniform(half + 1, n2 - half - 1) if n2 > 2 * half + 2 else n2 / 2
    pt = _Painter(n2, cx, top, h)

    # colours
    base = np.clip(_COLOUR_RGB[values[A_COLOUR]] + rng.normal(0, 9, 3), 0, 255)
    pat1, pat2 = _away(base, rng.uniform(0.4, 0.55)), _away(base, rng.uniform(0.68, 0.8))
    skin = np.clip(_SKIN[rng.integers(len(_SKIN))] + rng.normal(0, 7, 3), 0, 255)
    hair_kind = int(rng.integers(4))  # 0 none (bald mannequin), 1 cap, 2 bun, 3 long
    hair = np.clip(_HAIR[rng.integers(len(_HAIR))] + rng.normal(0, 8, 3), 0, 255)
    shoe = np.clip((rng.choice([25, 70, 225]),) * 3 + rng.normal(0, 10, 3), 0, 255)

    zones = []  # (attribute, (row slice, col slice), allowed labels) for region-defined masks
    _draw_mannequin(pt, b, hair_kind)
    _draw_pants(rng, pt, b, values)
    _draw_top(rng, pt, b, outfit)
    _draw_skirt(rng, pt, b, values)
    _draw_neck(rng, pt, b, values, zones)
    if outfit["coat"]:
        _draw_coat(rng, pt, b, values, zones)
    _draw_arms_and_sleeves(pt, b, values, outfit["coat"], zones)
    return _finish(rng, pt, size, values, zones, base, pat1, pat2, skin, hair, shoe)


def _draw_mannequin(pt: _Painter, b: _Body, hair_kind: int) -> None:
    """Legs, shoes, torso, neck, head and hair (long hair behind everything)."""
    if hair_kind == 3:
        pt.poly([(-b.head_rx * 1.15, b.head_ry), (b.head_rx * 1.15, b.head_ry), (b.head_rx * 1.3, b.y0 + 0.07),
                 (-b.head_rx * 1.3, b.y0 + 0.07)], L_HAIR)
    for sg in (1, -1):
        hj, an = b.legs[sg]
        pt.poly(_quad(hj, an, b.thigh, b.ankle_w), L_SKIN)
        pt.ellipse(an[0] + sg * 0.012, 0.972, 0.032, 0.022, L_SHOE)
    pt.poly(_sym([(0, b.y0 - 0.01), (b.nw, b.y0 - 0.01), (b.sw, b.ys), (b.sw + 0.004, b.ys + 0.03), (b.cw, 0.27),
                  (b.ww, b.yw), (b.hw, b.yh), (b.hw * 0.85, b.yc), (0, b.yc + 0.005)]), L_SKIN)
    pt.poly(_sym([(0, 2 * b.head_ry - 0.02), (b.nw, 2 * b.head_ry - 0.02), (b.nw, b.y0 + 0.01), (0, b.y0 + 0.01)]),
            L_SKIN)
    pt.ellipse(0, b.head_ry + 0.002, b.head_rx, b.head_ry, L_SKIN)
    if hair_kind:
        pt.chord(0, b.head_ry, b.head_rx * 1.06, b.head_ry * 1.04, 180, 360, L_HAIR)
        if hair_kind == 2:
            pt.ellipse(0, 0.004, b.head_rx * 0.5, b.head_ry * 0.38, L_HAIR)


def _draw_pants(rng: np.random.Generator, pt: _Painter, b: _Body, values) -> None:
    if not values[A_PANT]:
        return
    t = _PANT_T[values[A_PANT]] + rng.uniform(-0.02, 0.02) * (values[A_PANT] < 5)
    pt.poly(_sym([(0, b.yw - 0.006), (b.ww + 0.011, b.yw - 0.006), (b.hw + 0.013, b.yh), (b.hw + 0.008, b.yc),
                  (0, b.yc + 0.012)]), L_PANTS)
    for sg in (1, -1):
        hj, an = b.legs[sg]
        p1 = (hj[0] + t * (an[0] - hj[0]), hj[1] + t * (an[1] - hj[1]))
        w1 = b.thigh + t * (b.ankle_w - b.thigh)
        pt.poly(_quad((hj[0], hj[1] - 0.02), p1, b.thigh + 0.013, w1 + 0.012), L_PANTS)


def _draw_top(rng: np.random.Generator, pt: _Painter, b: _Body, outfit: dict) -> None:
    upper, lower = outfit["upper"], outfit["lower"]
    if upper == "none":
        return
    if upper == "dress" or lower == "skirt":
        y_hem = b.yw + 0.012
    elif lower == "pants":
        y_hem = b.yh + rng.uniform(-0.02, 0.015)
    else:
        y_hem = b.yh + rng.uniform(0.01, 0.04)
    e = 0.006 if lower != "skirt" and upper != "dress" else 0.0  # a loose top
    half_top = _cut([(0, b.y0 - 0.006), (b.nw + 0.004, b.y0 - 0.006), (b.sw + 0.01, b.ys - 0.003),
                     (b.sw + 0.014, b.ys + 0.03), (b.cw + 0.012 + e, 0.27), (b.ww + 0.012 + e, b.yw),
                     (b.hw + 0.014 + e, b.yh), (b.hw + 0.02, 1.0)], y_hem)
    pt.poly(_sym(half_top + [(0, y_hem)]), L_TOP)


def _draw_skirt(rng: np.random.Generator, pt: _Painter, b: _Body, values) -> None:
    if not values[A_SKIRT]:
        return
    y_hem = _SKIRT_HEM[values[A_SKIRT]] + rng.uniform(-0.012, 0.012) * (values[A_SKIRT] < 5)
    flare = rng.uniform(0.12, 0.4)
    hem_x = b.hw + 0.014 + (y_hem - b.yh) * flare
    for sg in (1, -1):
        hem_x = max(hem_x, _leg_x(b, sg, y_hem) + b.thigh + 0.012)
    pt.poly(_sym([(0, b.yw - 0.008), (b.ww + 0.01, b.yw - 0.008), (b.hw + 0.013, b.yh), (hem_x, y_hem),
                  (0, y_hem)]), L_SKIRT)


def _draw_neck(rng: np.random.Generator, pt: _Painter, b: _Body, values, zones: list) -> None:
    """The neckline cut, a collar or a neck piece (drawn a little larger than life, to stay legible)."""
    y0, nw, sw = b.y0, b.nw, b.sw
    if values[A_NECKLINE]:
        v = values[A_NECKLINE]
        if v == 1:  # round
            rx, ry = nw + rng.uniform(0.014, 0.022), rng.uniform(0.046, 0.058)
            pt.ellipse(0, y0 - 0.006, rx, ry, L_SKIN)
            zx, zy = rx, y0 - 0.006 + ry
        elif v in (2, 3):  # V, deep V
            depth = rng.uniform(0.075, 0.092) if v == 2 else rng.uniform(0.14, 0.17)
            zx = nw + (0.02 if v == 2 else 0.011)
            pt.poly([(-zx, y0 - 0.014), (zx, y0 - 0.014), (0, y0 + depth)], L_SKIN)
            zy = y0 + depth
        elif v == 4:  # square
            zx, zy = nw + rng.uniform(0.02, 0.028), y0 + rng.uniform(0.05, 0.062)
            pt.poly([(-zx, y0 - 0.014), (zx, y0 - 0.014), (zx, zy), (-zx, zy)], L_SKIN)
        else:  # straight: a horizontal edge across the chest, shoulders bare
            zx, zy = sw - rng.uniform(0.012, 0.022), y0 + rng.uniform(0.026, 0.036)
            pt.poly([(-zx, y0 - 0.03), (zx, y0 - 0.03), (zx, zy), (-zx, zy)], L_SKIN)
        zones.append((A_NECKLINE, pt.zone(-zx - 0.015, y0 - 0.02, zx + 0.015, zy + 0.015), (L_TOP, L_SKIN)))
    elif values[A_COLLAR]:
        v = values[A_COLLAR]
        if v == 1:  # shirt collar: two pointed wings
            pt.ellipse(0, y0 - 0.006, nw + 0.005, 0.03, L_SKIN)
            wing = [(0.0, y0 + 0.018), (nw * 0.6, y0 - 0.02), (nw + 0.016, y0 - 0.018), (nw + 0.042, y0 + 0.01),
                    (0.026, y0 + 0.082)]
            pt.poly(wing, L_COLLAR)
            pt.poly(_mirror(wing), L_COLLAR)
        elif v == 2:  # peter pan: two round lobes
            for sg in (1, -1):
                pt.ellipse(sg * (nw * 0.75 + 0.006), y0 + 0.02, 0.044, 0.033, L_COLLAR)
            pt.ellipse(0, y0 - 0.014, nw, 0.018, L_SKIN)
        elif v == 3:  # puritan: a wide flat collar over the shoulders
            pt.chord(0, y0 - 0.016, sw * 0.9, 0.11, 0, 180, L_COLLAR)
            pt.ellipse(0, y0 - 0.008, nw + 0.003, 0.024, L_SKIN)
        else:  # rib collar: a ribbed band around a round neck
            rx, ry = nw + 0.024, 0.06
            pt.ellipse(0, y0 - 0.016, rx, ry, L_SKIN)
            pt.arc(0, y0 - 0.016, rx, ry, 0, 180, 0.024, L_COLLAR)
            pt.arc(0, y0 - 0.016, rx - 0.012, ry - 0.012, 10, 170, 0.006, L_COLLAR_LINE)
    elif values[A_NECK]:
        v = values[A_NECK]
        if v in (1, 3):  # turtle / low turtle: a band up the neck with rolled folds
            y_top = 2 * b.head_ry + 0.003 if v == 1 else y0 - 0.036
            pt.poly(_sym([(0, y_top), (nw + 0.011, y_top), (nw + 0.014, y0 + 0.014), (0, y0 + 0.016)]), L_NECK)
            for k in ((1, 2) if v == 1 else (1,)):
                yl = y_top + k * (y0 + 0.014 - y_top) / (3 if v == 1 else 2)
                pt.line([(-nw - 0.01, yl), (nw + 0.01, yl)], 0.008, L_NECK_LINE)
        elif v == 2:  # ruffled semi-high collar: flaring open, with a zigzag top edge
            y_top, wide = y0 - 0.044, nw + 0.042
            teeth = [(-wide + 2 * wide * k / 6, y_top + (0.022 if k % 2 else 0.0)) for k in range(7)]
            pt.poly(teeth + [(nw + 0.014, y0 + 0.016), (-nw - 0.014, y0 + 0.016)], L_NECK)
            pt.line([(-nw - 0.006, y0 - 0.002), (nw + 0.006, y0 - 0.002)], 0.008, L_NECK_LINE)
        else:  # draped (cowl): loose folds hanging on the chest
            pt.poly(_sym([(0, y0 - 0.016), (nw + 0.036, y0 - 0.016), (nw + 0.027, y0 + 0.045), (0, y0 + 0.1)]),
                    L_NECK)
            pt.arc(0, y0 - 0.014, nw + 0.017, 0.06, 15, 165, 0.008, L_NECK_LINE)
            pt.arc(0, y0 - 0.014, nw + 0.027, 0.09, 25, 155, 0.008, L_NECK_LINE)


def _draw_coat(rng: np.random.Generator, pt: _Painter, b: _Body, values, zones: list) -> None:
    """Two open panels, lapels at the opening (a collarless coat's mask is its front edge)."""
    y_hem = _COAT_HEM[values[A_COAT]] + rng.uniform(-0.012, 0.012) * (values[A_COAT] < 5)
    yb = min(b.yw - 0.03, y_hem - 0.004)
    flare = rng.uniform(0.1, 0.3)
    neck_pt = (b.nw + 0.02, b.y0 + 0.004)
    for sg in (1, -1):
        leg_x = _leg_x(b, sg, y_hem) + b.thigh + 0.02
        outer = [(b.nw + 0.008, b.y0 - 0.01), (b.sw + 0.02, b.ys - 0.004), (b.sw + 0.026, b.ys + 0.035),
                 (b.cw + 0.024, 0.275), (b.ww + 0.028, b.yw), (b.hw + 0.028, b.yh),
                 (b.hw + 0.03 + flare * (1.0 - b.yh), 1.0)]
        path = _cut(outer, y_hem)
        if y_hem > b.yh:
            path[-1] = (max(path[-1][0], leg_x), y_hem)
        panel = path + [(0.012 + max(0.0, y_hem - yb) * 0.2, y_hem), (0.012, yb), neck_pt]
        pt.poly(panel if sg == 1 else _mirror(panel), L_COAT)
    lap_end = (neck_pt[0] + 0.7 * (0.012 - neck_pt[0]), neck_pt[1] + 0.7 * (yb - neck_pt[1]))
    nx, ny = neck_pt
    lapel = None
    if values[A_LAPEL] == 1:  # notched: a collar piece and a lapel with a deep notch between them
        lapel = [(nx - 0.004, ny - 0.018), (nx + 0.032, ny - 0.012), (nx + 0.04, ny + 0.026),
                 (nx + 0.018, ny + 0.036), (nx + 0.074, ny + 0.05), lap_end]
    elif values[A_LAPEL] == 3:  # shawl: one smooth rounded band, no notch
        arc = [(nx + 0.05 * math.sin(math.pi * k / 8), ny + (lap_end[1] - ny) * k / 8) for k in range(1, 8)]
        lapel = [(nx - 0.004, ny - 0.018), (nx + 0.02, ny - 0.016)] + arc + [lap_end]
    elif values[A_LAPEL] == 4:  # peak: the lapel's point rises above the notch, towards the shoulder
        lapel = [(nx - 0.004, ny - 0.018), (nx + 0.03, ny - 0.012), (nx + 0.036, ny + 0.03),
                 (nx + 0.092, ny - 0.004), (nx + 0.07, ny + 0.07), lap_end]
    if lapel is not None:
        pt.poly(lapel, L_LAPEL)
        pt.poly(_mirror(lapel), L_LAPEL)
    else:  # collarless: the mask is the coat's front edge where lapels would be
        for sg in (1, -1):
            xs = sorted((sg * (nx - 0.014), sg * (nx + 0.07)))
            zones.append((A_LAPEL, pt.zone(xs[0], ny - 0.016, xs[1], lap_end[1] + 0.012), (L_COAT,)))


def _draw_arms_and_sleeves(pt: _Painter, b: _Body, values, coat: bool, zones: list) -> None:
    """Bare arms, then sleeves over them (the coat's sleeves when a coat is worn)."""
    for sg in (1, -1):
        sj, el, wr, d1, d2 = b.arms[sg]
        pt.poly(_quad(sj, el, 0.024, 0.019), L_SKIN)
        pt.poly(_quad(el, wr, 0.019, 0.015), L_SKIN)
        pt.ellipse(el[0], el[1], 0.019, 0.019, L_SKIN)
        pt.ellipse(wr[0] + d2[0] * 0.016, wr[1] + d2[1] * 0.016, 0.021, 0.024, L_SKIN)
    sv = values[A_SLEEVE]
    if not sv:
        return
    reach_len = {2: 0.03, 3: 0.085, 4: _UPPER_ARM + 0.008, 5: _UPPER_ARM + 0.55 * _FOREARM,
                 6: _UPPER_ARM + _FOREARM + 0.006}.get(sv, 0.0)
    label = L_COAT_SLEEVE if coat else L_TOP_SLEEVE
    width = (0.066 if coat else 0.058) + (0.012 if sv == 2 else 0.0)
    for sg in (1, -1):
        sj, el, wr, d1, d2 = b.arms[sg]
        if sv == 1:  # sleeveless: the armhole and the top of the bare arm
            zones.append((A_SLEEVE, pt.zone(sj[0] - 0.04, sj[1] - 0.035, sj[0] + 0.04, sj[1] + 0.045),
                          (L_TOP, L_COAT, L_SKIN)))
            continue
        if reach_len <= _UPPER_ARM:
            path = [sj, (sj[0] + d1[0] * reach_len, sj[1] + d1[1] * reach_len)]
        else:
            r = reach_len - _UPPER_ARM
            path = [sj, el, (el[0] + d2[0] * r, el[1] + d2[1] * r)]
        pt.ellipse(sj[0], sj[1], width / 2, width * 0.42, label)  # a rounded shoulder
        pt.line(path, width, label)


def _finish(rng, pt: _Painter, size, values, zones, base, pat1, pat2, skin, hair, shoe) -> Sample:
    """Colour the label map, add clutter, occluders, lighting and noise; derive the masks."""
    n2 = pt.size2
    lab_im = pt.im

    # colour look-up: index = label * 3 + pattern index (+ 48 on outlines)
    lut = np.zeros((2, _NUM_LABELS, 3, 3), np.float64)
    lut[0, L_SKIN], lut[0, L_HAIR], lut[0, L_SHOE] = skin, hair, shoe
    fabric = np.where(_SOLID_MASK[:, :, None], base, np.stack([base, pat1, pat2])[None])  # (labels, 3, 3)
    light = (fabric @ np.array([0.299, 0.587, 0.114]))[..., None] > 105
    tone = _TONE_ARRAY[:, None, None]
    lut[0, _GARMENT] = fabric * (1 - tone) + np.where(light, 0.0, 255.0) * tone
    # outlines: darken light colours, lighten dark ones, on the figure side of every part boundary
    dark = (lut[0] @ np.array([0.299, 0.587, 0.114]))[..., None] > 100
    lut[1] = np.where(dark, lut[0] * 0.55, lut[0] + (200 - lut[0]) / 3)
    lut = np.clip(lut, 0, 255).astype(np.uint8).reshape(2 * _NUM_LABELS * 3, 3)

    im = _background(rng, n2)
    n_clutter = int(rng.integers(2, 7))
    n_front = min(n_clutter, int(rng.integers(0, 3)))
    draw = ImageDraw.Draw(im)
    for _ in range(n_clutter - n_front):
        shape = _shape(rng, rng.uniform(0, n2), rng.uniform(0, n2), n2 * rng.uniform(0.04, 0.16))
        _draw_shape(draw, shape, _colour_tuple(_random_colour(rng, 0.5)))

    # the figure, coloured inside its bounding box (one pixel larger, for the outlines) and pasted
    x0, y0, x1, y1 = lab_im.getbbox()
    x0, y0, x1, y1 = max(0, x0 - 1), max(0, y0 - 1), min(n2, x1 + 1), min(n2, y1 + 1)
    lab_box = np.asarray(lab_im.crop((x0, y0, x1, y1)))
    pattern = _pattern(rng, values[A_TEXTURE], lab_box.shape, pt.s)
    edge = np.zeros(lab_box.shape, bool)
    dh, dv = lab_box[:, 1:] != lab_box[:, :-1], lab_box[1:, :] != lab_box[:-1, :]
    edge[:, 1:] |= dh
    edge[:, :-1] |= dh
    edge[1:, :] |= dv
    edge[:-1, :] |= dv
    index = lab_box * np.uint8(3) + pattern + edge.view(np.uint8) * np.uint8(3 * _NUM_LABELS)
    figure = Image.fromarray(np.take(lut, index, axis=0))
    im.paste(figure, (x0, y0), Image.fromarray(lab_box).point(_OPAQUE))

    # masks (at the drawing size) before anything is put in front of the figure
    bits = _mask_bits(np.asarray(lab_im), zones)

    # in front of the figure: clutter shapes and, sometimes, an occluding block. A candidate that
    # would leave less than 40% of any attribute region visible is left out.
    items = ["clutter"] * n_front + (["block"] if rng.random() < 0.3 else [])
    if items:
        figure_bits = bits[y0:y1, x0:x1].copy()  # every attribute pixel lies in the figure's box
        total: dict[int, int] = {}  # attribute -> its pixels before / still visible (counted when first touched)
        left: dict[int, int] = {}
        label_draw = ImageDraw.Draw(lab_im)
        for kind in items:
            colour = _colour_tuple(_random_colour(rng, 0.5))
            if kind == "clutter":
                shape = _shape(rng, rng.uniform(x0, x1), rng.uniform(y0, y1), pt.s * rng.uniform(0.04, 0.1))
            else:
                bw, bh = pt.s * rng.uniform(0.12, 0.3), pt.s * rng.uniform(0.08, 0.25)
                bx, by = rng.uniform(x0 - bw / 2, x1 - bw / 2), rng.uniform(y0 - bh / 2, y1 - bh / 2)
                shape = ("rectangle", [bx, by, bx + bw, by + bh])
            scratch = Image.new("1", (x1 - x0, y1 - y0), 0)
            _draw_shape(ImageDraw.Draw(scratch), _moved(shape, -x0, -y0), 1)
            hit = np.asarray(scratch)
            hidden = figure_bits[hit]
            touched = int(np.bitwise_or.reduce(hidden)) if hidden.size else 0
            after = {}
            for a in range(NUM_ATTRIBUTES):
                if touched >> a & 1:
                    flag = np.uint16(1 << a)
                    if a not in total:
                        total[a] = left[a] = np.count_nonzero(figure_bits & flag)
                    after[a] = left[a] - np.count_nonzero(hidden & flag)
            if any(after[a] < 0.4 * total[a] for a in after):
                continue
            left.update(after)
            figure_bits[hit] = 0
            _draw_shape(draw, shape, colour)
            _draw_shape(label_draw, shape, L_FRONT)
            if kind == "block":
                draw.rectangle(shape[1], outline=_colour_tuple(_away(np.array(colour, float), 0.4)),
                               width=max(1, n2 // 112))
        bits[y0:y1, x0:x1] = figure_bits  # what is left visible (front items carry no attribute)
    # output pixel = 2x2 drawing pixels: an attribute covers it if it covers any part of it
    bits = bits[0::2, 0::2] | bits[1::2, 0::2] | bits[0::2, 1::2] | bits[1::2, 1::2]

    # 2x2 box filter to the output size, then lighting (brightness / contrast gradient) and noise
    # out = ((in - 128) * contrast + 128) * gain + noise, as one multiply-add per pixel
    img = np.asarray(im.reduce(2), dtype=np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    ax = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    ramp = np.float32(math.cos(ang)) * ax[None, :] + np.float32(math.sin(ang)) * ax[:, None]
    gain = np.float32(rng.uniform(0.82, 1.12)) + np.float32(rng.uniform(0.0, 0.4)) * ramp
    contrast = np.float32(rng.uniform(0.8, 1.1))
    noise = rng.standard_normal((size, size), dtype=np.float32) * np.float32(rng.uniform(1.0, 5.0))
    offset = (np.float32(128.0) - np.float32(128.0) * contrast) * gain + noise + np.float32(0.5)
    img *= (gain * contrast)[..., None]
    img += offset[..., None]
    image = np.clip(img, 0, 255, out=img).astype(np.uint8)
    return Sample(image=image, mask=bits, values=tuple(values))


_OPAQUE = [0] + [255] * 255  # label -> paste mask
_TONE_ARRAY = np.array([_TONE[lb] for lb in _GARMENT])
_SOLID_MASK = np.array([[lb in _SOLID or k == 0 for k in range(3)] for lb in _GARMENT])


def _colour_tuple(c) -> tuple[int, int, int]:
    c = np.clip(np.asarray(c), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def _mask_bits(lab: np.ndarray, zones) -> np.ndarray:
    """16-bit attribute masks (bit a = attribute a) from the label map and the region-defined zones."""
    bits = _BITS[lab]
    for a, (rs, cs), allowed in zones:
        sub = lab[rs, cs]
        inside = sub == allowed[0]
        for lb in allowed[1:]:
            inside |= sub == lb
        bits[rs, cs] |= inside.view(np.uint8).astype(np.uint16) << np.uint16(a)
    return bits


# --------------------------------------------------------------------------------------------------
# Writing a dataset

_SPLIT_ID = {"train": 0, "valid": 1, "test": 2}
_N_LOCAL = sum(kind == "local" for kind in ATTRIBUTE_KIND.values())
EVAL_INVISIBLE_RATE = 0.1  # share of "Invisible" labels offered to the query/candidate assignment
_CHUNK = 32


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: independent of generation order and worker count."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_ID[split], index]))


def _encode_png(array: np.ndarray) -> bytes:
    """PNG bytes with fixed options and no metadata chunks: the same pixels always give the same bytes.

    RGB images go through OpenCV's encoder when it is installed (a fixed SUB filter and fast deflate:
    about twice as fast as PIL's adaptive filtering on these noisy pictures, for 5% more bytes);
    masks (mostly zeros) through PIL.
    """
    if array.ndim == 3 and _cv2 is not None:
        ok, buf = _cv2.imencode(".png", np.ascontiguousarray(array[..., ::-1]), _CV2_PNG)
        if ok:
            return buf.tobytes()
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", compress_level=1)
    return out.getvalue()


try:  # optional: a faster PNG encoder (opencv-python-headless is a dependency of the project)
    import cv2 as _cv2

    _CV2_PNG = [_cv2.IMWRITE_PNG_COMPRESSION, 1, _cv2.IMWRITE_PNG_FILTER, _cv2.IMWRITE_PNG_FILTER_SUB]
except ImportError:  # pragma: no cover - PIL alone works, a little slower
    _cv2 = None


def _render_chunk(job: tuple) -> list[tuple[int, ...]]:
    """Render images ``start..stop-1`` of one split into ``root``; returns their values (in order)."""
    root, split, seed, size, start, stop = job
    root = Path(root)
    out = []
    for i in range(start, stop):
        sample = render_garment(image_rng(seed, split, i), size)
        name = f"{i:06d}.png"
        (root / "images" / split / name).write_bytes(_encode_png(sample.image))
        (root / "masks" / split / name).write_bytes(_encode_png(sample.mask))
        out.append(sample.values)
    return out


def _check_int(name: str, value, lo: int, hi: int | None = None, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DatasetError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise DatasetError(f"{name} must be {bound}{why}, got {value}")
    return value


def generate_synth(
    out: str | os.PathLike,
    n_train: int,
    n_valid: int,
    n_test: int,
    size: int = 112,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    workers: int = 1,
    eval_layout: str = "asen",
) -> Path:
    """Write a synthetic garment dataset in the ASEN split format (with masks) to ``out``; return ``out``.

    The folder holds ``images/<split>/<i>.png`` (RGB, ``size`` x ``size``), ``masks/<split>/<i>.png``
    (16-bit, see :func:`load_attribute_masks`), ``filenames_<split>.txt`` (``<split>/<i>.png``),
    ``label_<split>.txt`` (all 10 attributes of every image), ``query_/candidate_<split>.txt`` for valid
    and test, and ``meta.json``. It is built in a temporary folder beside ``out`` and renamed into
    place; on any error nothing is left behind. An existing non-empty ``out`` is refused unless
    ``overwrite`` is set (and even then only if it holds a ``meta.json``: we never delete a folder that
    is not a dataset). ``workers`` > 1 renders in that many processes; the files are identical.

    ``eval_layout`` (:data:`~profashion.data.splits.EVAL_LAYOUTS`): ``"asen"`` (the default) judges each
    valid/test image under ONE attribute; ``"all-attributes"`` under every attribute it takes part in
    (the same labels enter: "Invisible" of a local part at ``EVAL_INVISIBLE_RATE``), query for about 20%
    of each attribute's and candidate for the rest, recorded as ``EVAL_LAYOUT`` in meta.json. The
    default writes the same bytes as before the option existed.
    """
    n_train = _check_int("n_train", n_train, 0)
    n_valid = _check_int("n_valid", n_valid, 1, why=" (the valid split needs at least one image)")
    n_test = _check_int("n_test", n_test, 1, why=" (the test split needs at least one image)")
    size = _check_int("size", size, MIN_SIZE, MAX_SIZE, why=" pixels")
    seed = _check_int("seed", seed, 0)
    workers = _check_int("workers", workers, 1)
    if eval_layout not in splits.EVAL_LAYOUTS:
        raise DatasetError(f"unknown eval layout {eval_layout!r}: choose one of {', '.join(splits.EVAL_LAYOUTS)}")
    out = Path(out)
    check_output_folder(out, overwrite, flag="overwrite=True (--overwrite)", marker="meta.json", error=DatasetError)
    with atomic_folder(out) as tmp:
        _build(tmp, {"train": n_train, "valid": n_valid, "test": n_test}, size, seed, progress, workers,
               eval_layout)
    return out


def _build(root: Path, counts: dict[str, int], size: int, seed: int, progress: bool, workers: int,
           eval_layout: str = "asen") -> None:
    jobs = []
    for split, n in counts.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        jobs += [(str(root), split, seed, size, s, min(n, s + _CHUNK)) for s in range(0, n, _CHUNK)]
    values: dict[str, list] = {s: [] for s in counts}
    total, done = sum(counts.values()), 0

    def collect(split: str, vals: list) -> None:
        nonlocal done
        values[split] += vals
        before, done = done, done + len(vals)
        if progress and (done == total or before // 500 != done // 500):
            print(f"synth: {done}/{total} images", file=sys.stderr, flush=True)

    if workers > 1 and len(jobs) > 1:
        # fork where we can (fast, and works from any __main__); the workers only run numpy and PIL
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as pool:
            for job, vals in zip(jobs, pool.map(_render_chunk, jobs)):
                collect(job[1], vals)
    else:
        for job in jobs:
            collect(job[1], _render_chunk(job))
    A = NUM_ATTRIBUTES
    for split, n in counts.items():
        names = [f"{split}/{i:06d}.png" for i in range(n)]
        labels = [list(enumerate(v)) for v in values[split]]
        queries = candidates = None
        if split in splits.EVAL_SPLITS:
            rows = np.array([(f, a, v) for f, vals in enumerate(values[split]) for a, v in enumerate(vals)],
                            dtype=np.int64).reshape(-1, 3)
            qrng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_ID[split], 2**32 - 1, 1]))
            # Like FashionAI (whose images were collected per attribute), an eval image is mostly judged
            # on an attribute it shows: "Invisible" labels of the local attributes enter the query /
            # candidate assignment only at EVAL_INVISIBLE_RATE, so "Invisible" stays an ordinary but
            # minority class instead of the majority it is among all labels (53-74% for some parts).
            invisible = (rows[:, 2] == 0) & (rows[:, 1] < _N_LOCAL)
            keep = ~invisible | (qrng.random(len(rows)) < EVAL_INVISIBLE_RATE)
            queries, candidates = splits.eval_query_split(rows[keep], A, qrng, eval_layout)
        splits.write_split_files(root, split, names, labels, queries, candidates)
    extra = {
        "ATTRIBUTE_KIND": dict(ATTRIBUTE_KIND),
        "GENERATOR": {"seed": seed, "size": size, "version": GENERATOR_VERSION},
        "MASK_ENCODING": "16-bit grayscale PNG under MASK_ROOT, same relative path as the image; "
                         "bit a set where attribute a (ATTRIBUTES order) lives in the picture",
    }
    if eval_layout != "asen":  # the default layout leaves meta.json as it always was
        extra["EVAL_LAYOUT"] = eval_layout
    splits.write_meta(root, SYNTH_SCHEMA, "synth", image_root="images", mask_root="masks", extra=extra)
    for f in root.iterdir():  # the split writer's temporary files are private (0600); datasets are shared
        if f.is_file():
            os.chmod(f, 0o644)
