"""The W-OoD statistics figure draws every logged statistic and refuses a baseline log."""

import numpy as np
import pytest
from PIL import Image

from wood_train.wood.statistics_figure import COLOURS, PANEL_H, PANEL_W, plot_wood_statistics


def _log(path, columns):
    header = ",".join(columns)
    rows = zip(*columns.values())
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_every_panel_gets_its_curves(tmp_path):
    steps = list(range(1, 11))
    log = _log(tmp_path / "train_log.csv", {
        "step": steps, "epoch": [1] * 10, "loss": [1.0] * 10,
        "bce": np.linspace(0.7, 0.3, 10), "l_dist": np.linspace(3, 1, 10),
        "l_ood": np.linspace(0.6, 0.2, 10), "pull": np.linspace(9, 5, 10),
        "push": np.linspace(6, 4, 10), "tau": np.linspace(20, 25, 10),
        "pushed_fraction": [0.2] * 10,
    })  # fmt: skip
    out = plot_wood_statistics(log, tmp_path / "fig.png")
    pixels = np.asarray(Image.open(out).convert("RGB"))
    assert pixels.shape == (2 * PANEL_H, 2 * PANEL_W, 3)

    def has(colour, rows, cols):
        return bool((pixels[rows, cols] == colour).all(axis=-1).any())

    top, bottom = slice(0, PANEL_H), slice(PANEL_H, 2 * PANEL_H)
    left, right = slice(0, PANEL_W), slice(PANEL_W, 2 * PANEL_W)
    assert has(COLOURS[0], top, left) and has(COLOURS[0], top, right)  # tau, pushed fraction
    assert has(COLOURS[1], bottom, left) and not has(COLOURS[2], bottom, left)  # pull, push
    assert has(COLOURS[2], bottom, right)  # BCE, L_dist, L_ood


def test_a_baseline_log_has_nothing_to_draw(tmp_path):
    log = _log(tmp_path / "train_log.csv", {"step": [1, 2], "loss": [0.5, 0.4], "bce": [0.5, 0.4]})
    with pytest.raises(ValueError, match="no W-OoD statistics"):
        plot_wood_statistics(log, tmp_path / "fig.png")
