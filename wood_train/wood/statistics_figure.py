"""A figure of what W-OoD's distance loss did, step by step, from a run's ``train_log.csv``.

Four panels: the quantile cut tau, the fraction of (sample, centre) pairs pushed, the mean pull and
push terms of L_dist, and the three loss terms (BCE, L_dist, L_ood). Drawn with Pillow, like the
demo report's other figures, so it needs no plotting library.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PANELS = (
    ("tau (quantile cut of OoD distances)", ("tau",)),
    ("pushed fraction of (sample, centre) pairs", ("pushed_fraction",)),
    ("L_dist terms: pull, push", ("pull", "push")),
    ("loss terms: BCE, L_dist, L_ood", ("bce", "l_dist", "l_ood")),
)
COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44))
PANEL_W, PANEL_H, MARGIN = 360, 190, 36


def read_train_log(path: str | Path) -> dict[str, list[float]]:
    """The numeric columns of ``train_log.csv`` (empty cells become NaN)."""
    columns: dict[str, list[float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    number = math.nan
                columns.setdefault(key, []).append(number)
    return columns


def plot_wood_statistics(train_log: str | Path, out: str | Path) -> Path:
    """Draw the W-OoD statistics of a run's ``train_log.csv`` into the PNG ``out``.

    Raises ``ValueError`` when the log holds no W-OoD statistics (a baseline run).
    """
    columns = read_train_log(train_log)
    if "tau" not in columns or not columns.get("step"):
        raise ValueError(f"{train_log}: no W-OoD statistics (tau, pull, push) in this log")
    sheet = Image.new("RGB", (2 * PANEL_W, 2 * PANEL_H), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    steps = columns["step"]
    for index, (title, keys) in enumerate(PANELS):
        left, top = (index % 2) * PANEL_W, (index // 2) * PANEL_H
        box = (left + MARGIN, top + 22, left + PANEL_W - 10, top + PANEL_H - 20)
        series = [(k, columns[k]) for k in keys if k in columns]
        values = [v for _, ys in series for v in ys if math.isfinite(v)]
        draw.text((left + 8, top + 5), title, fill="black", font=font)
        draw.rectangle(box, outline=(160, 160, 160))
        if not values:
            continue
        low, high = min(values), max(values)
        high = high if high > low else low + 1.0
        draw.text((left + 2, box[1]), f"{high:.3g}", fill="black", font=font)
        draw.text((left + 2, box[3] - 10), f"{low:.3g}", fill="black", font=font)
        draw.text((box[0], box[3] + 3), f"step {steps[0]:.0f}", fill="black", font=font)
        draw.text((box[2] - 60, box[3] + 3), f"step {steps[-1]:.0f}", fill="black", font=font)
        span = max(steps[-1] - steps[0], 1.0)
        for rank, (colour, (key, ys)) in enumerate(zip(COLOURS, series)):
            draw.text((box[2] - 70, box[1] + 4 + 12 * rank), key, fill=colour, font=font)
            points = [
                (box[0] + (s - steps[0]) / span * (box[2] - box[0]),
                 box[3] - (y - low) / (high - low) * (box[3] - box[1]))
                for s, y in zip(steps, ys) if math.isfinite(y)
            ]  # fmt: skip
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            elif points:
                draw.point(points, fill=colour)
    out = Path(out)
    sheet.save(out)
    return out
