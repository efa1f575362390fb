"""Two small charts drawn with Pillow: lines with a shaded spread, and overlaid histograms.

The label-efficiency figure (``benches/label_efficiency.py``) and the demo report's score
histograms use them; Pillow is already a dependency, so no plotting library is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))
GREY = (120, 120, 120)


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


@dataclass(frozen=True)
class Line:
    """One line of a chart: its mean at each x and the spread (low, high) shaded around it."""

    label: str
    x: tuple[float, ...]
    mean: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]


@dataclass
class _Frame:
    """Maps data coordinates to pixels inside a plot area."""

    left: int
    top: int
    width: int
    height: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    log_x: bool = False

    def _fx(self, x: float) -> float:
        return math.log2(x) if self.log_x else x

    def px(self, x: float, y: float) -> tuple[float, float]:
        x0, x1 = (self._fx(v) for v in self.x_range)
        y0, y1 = self.y_range
        u = (self._fx(x) - x0) / ((x1 - x0) or 1.0)
        v = (y - y0) / ((y1 - y0) or 1.0)
        return self.left + u * self.width, self.top + (1 - v) * self.height


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    span = (hi - lo) or 1.0
    step = 10 ** math.floor(math.log10(span / count))
    for factor in (1, 2, 2.5, 5, 10):
        if span / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step) + 1)]


def _axes(draw: ImageDraw.ImageDraw, frame: _Frame, x_ticks, y_ticks, x_label, y_label, title):
    font, small = _font(13), _font(11)
    right, bottom = frame.left + frame.width, frame.top + frame.height
    for y in y_ticks:
        _, py = frame.px(frame.x_range[0], y)
        draw.line([(frame.left, py), (right, py)], fill=(230, 230, 230))
        draw.text((frame.left - 6, py), f"{y:g}", fill="black", font=small, anchor="rm")
    for x in x_ticks:
        px, _ = frame.px(x, frame.y_range[0])
        draw.line([(px, bottom), (px, bottom + 4)], fill="black")
        draw.text((px, bottom + 6), f"{x:g}", fill="black", font=small, anchor="mt")
    draw.rectangle([frame.left, frame.top, right, bottom], outline="black")
    draw.text((frame.left + frame.width / 2, bottom + 24), x_label, fill="black", font=font,
              anchor="mt")  # fmt: skip
    draw.text((frame.left, frame.top - 8), y_label, fill="black", font=font, anchor="lb")
    draw.text((frame.left + frame.width / 2, 6), title, fill="black", font=_font(14), anchor="mt")


def line_chart(
    lines: list[Line],
    out: str | Path,
    title: str,
    x_label: str,
    y_label: str,
    reference: tuple[str, float] | None = None,
    log_x: bool = True,
    size: tuple[int, int] = (640, 400),
) -> Path:
    """Lines with their spread shaded (alpha blended), an optional dashed reference level, a legend.

    ``log_x`` puts x on a log2 axis (budgets that double). Returns ``out``.
    """
    xs = [x for line in lines for x in line.x]
    ys = [y for line in lines for y in (*line.low, *line.high)]
    if reference is not None:
        ys.append(reference[1])
    if not xs:
        raise ValueError("line_chart needs at least one point")
    pad = 0.08 * ((max(ys) - min(ys)) or 1.0)
    frame = _Frame(70, 52, size[0] - 90, size[1] - 112, (min(xs), max(xs)),
                   (min(ys) - pad, max(ys) + pad), log_x)  # fmt: skip
    if frame.x_range[0] == frame.x_range[1]:
        frame.x_range = (frame.x_range[0] / 2, frame.x_range[0] * 2)
    image = Image.new("RGB", size, "white")
    shade = Image.new("RGBA", size, (0, 0, 0, 0))
    shade_draw = ImageDraw.Draw(shade)
    for k, line in enumerate(lines):
        band = [frame.px(x, y) for x, y in zip(line.x, line.high)]
        band += [frame.px(x, y) for x, y in reversed(list(zip(line.x, line.low)))]
        if len(band) >= 3:
            shade_draw.polygon(band, fill=(*COLOURS[k % len(COLOURS)], 60))
    image.paste(shade, (0, 0), shade)
    draw = ImageDraw.Draw(image)
    x_ticks = sorted(set(xs))
    _axes(draw, frame, x_ticks, _nice_ticks(*frame.y_range), x_label, y_label, title)
    if reference is not None:
        _, py = frame.px(frame.x_range[0], reference[1])
        for start in range(frame.left, frame.left + frame.width, 12):
            draw.line(
                [(start, py), (min(start + 6, frame.left + frame.width), py)], fill=GREY, width=2
            )
        draw.text((frame.left + 6, py - 3), reference[0], fill=GREY, font=_font(11), anchor="lb")
    for k, line in enumerate(lines):
        colour = COLOURS[k % len(COLOURS)]
        points = [frame.px(x, y) for x, y in zip(line.x, line.mean)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3)
        for px, py in points:
            draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
    _legend(draw, [line.label for line in lines], frame, lines)
    image.save(out)
    return Path(out)


def legend_corner(lines: list[Line], frame: _Frame, box: tuple[float, float]) -> tuple[int, int]:
    """Top-left pixel of a ``box`` (width, height) legend in the corner of the plot area that
    the fewest points of the lines fall in (ties: top-left, then top-right, bottom-left)."""
    w, h = box
    right, bottom = frame.left + frame.width, frame.top + frame.height
    corners = [(frame.left + 8, frame.top + 6), (right - 8 - w, frame.top + 6),
               (frame.left + 8, bottom - 6 - h), (right - 8 - w, bottom - 6 - h)]  # fmt: skip
    points = []
    for line in lines:  # the mean lines, sampled along each segment
        xy = [frame.px(x, y) for x, y in zip(line.x, line.mean)]
        for (x0, y0), (x1, y1) in zip(xy, xy[1:] or xy):
            points += [(x0 + t * (x1 - x0), y0 + t * (y1 - y0)) for t in np.linspace(0, 1, 40)]

    def covered(corner):
        x, y = corner
        return sum(x - 4 <= px <= x + w + 4 and y - 4 <= py <= y + h + 4 for px, py in points)

    return min(corners, key=covered)


def _legend(draw: ImageDraw.ImageDraw, labels: list[str], frame: _Frame, lines: list[Line]) -> None:
    font = _font(12)
    box = (34 + max(draw.textlength(label, font=font) for label in labels), 18 * len(labels))
    x, y = legend_corner(lines, frame, box)
    draw.rectangle([x - 4, y - 3, x + box[0] + 4, y + box[1] + 1], fill="white",
                   outline=(200, 200, 200))  # fmt: skip
    for k, label in enumerate(labels):
        colour = COLOURS[k % len(COLOURS)]
        draw.line([(x, y + 7 + 18 * k), (x + 22, y + 7 + 18 * k)], fill=colour, width=3)
        draw.text((x + 28, y + 18 * k), label, fill="black", font=font)


def histogram_panels(
    panels: dict[str, dict[str, np.ndarray]],
    out: str | Path,
    x_label: str,
    bins: int = 20,
    value_range: tuple[float, float] = (0.0, 1.0),
    panel_size: tuple[int, int] = (420, 300),
) -> Path:
    """One panel per title, each overlaying the histograms (share of the group per bin) of its
    groups as outlined steps, so groups of different sizes compare. Returns ``out``."""
    edges = np.linspace(*value_range, bins + 1)
    width, height = panel_size
    image = Image.new("RGB", (width * len(panels), height), "white")
    draw = ImageDraw.Draw(image)
    shares = {title: {name: np.histogram(np.clip(v, *value_range), edges)[0] / max(1, len(v))
                      for name, v in groups.items()} for title, groups in panels.items()}  # fmt: skip
    top = max(
        (s.max() for groups in shares.values() for s in groups.values() if len(s)), default=1.0
    )
    for p, (title, groups) in enumerate(shares.items()):
        frame = _Frame(p * width + 60, 52, width - 80, height - 112, value_range, (0.0, top * 1.05))
        _axes(draw, frame, _nice_ticks(*value_range), _nice_ticks(0.0, top * 1.05, 4), x_label,
              "share of group", "")  # fmt: skip
        draw.text(
            (frame.left + frame.width / 2, 6), title, fill="black", font=_font(14), anchor="mt"
        )
        for k, (name, share) in enumerate(groups.items()):
            colour = COLOURS[k % len(COLOURS)]
            steps = []
            for lo, hi, s in zip(edges[:-1], edges[1:], share):
                steps += [frame.px(lo, s), frame.px(hi, s)]
            draw.line(steps, fill=colour, width=2)
            count = len(panels[title][name])
            draw.text((frame.left + frame.width - 8, frame.top + 8 + 16 * k), f"{name} ({count})",
                      fill=colour, font=_font(12), anchor="ra")  # fmt: skip
    image.save(out)
    return Path(out)
