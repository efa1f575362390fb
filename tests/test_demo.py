"""The whole demo, tiny: every artefact exists and is well-formed, and a re-run reuses every step."""

import json

from PIL import Image

from app.demo.report import TILE
from app.demo.run import DemoConfig, run_demo
from wood_train.data.voc import read_class_names
from wood_train.manifest.validate import validate_manifest


def test_tiny_demo_end_to_end_and_rerun(tmp_path):
    config = DemoConfig(out=tmp_path / "ws", manifest_dir=tmp_path / "manifests" / "demo-world", tiny=True,
                        cam_scales=(1.0, 0.5), queue_size=30)  # fmt: skip
    lines = []
    report = run_demo(config, log=lines.append)
    ws = tmp_path / "ws"

    loaded = validate_manifest(
        config.manifest_dir, expected_classes=read_class_names(ws / "world" / "VOC2012")
    )
    assert len(loaded.rows) > 0 and set(loaded.rows.verdict) <= {
        "no_foreground",
        "contains_foreground",
    }
    assert (config.manifest_dir / "ood_list.txt").read_text().count("\n") == len(loaded.ood_paths)

    text = report.read_text()
    for heading in ("| metric | baseline | W-OoD |", "### Per-class IoU", "## The loop", "## Labelling cost",
                    "hardood annotate --db", "Verdicts were simulated"):  # fmt: skip
        assert heading in text
    for name in ("baseline", "wood"):
        evaluation = json.loads((ws / "cams" / name / "eval.json").read_text())["evaluation"]
        assert (
            0.0 <= evaluation["miou"] <= 1.0
            and 0.0 <= evaluation["spurious_activation_rate"] <= 1.0
        )
    with Image.open(ws / "fig_cams.png") as fig:
        assert (
            fig.format == "PNG"
            and fig.width == 4 * TILE
            and (fig.height - 18) % TILE == 0
            and fig.height > TILE
        )
    with Image.open(ws / "fig_queue.png") as sheet:
        assert sheet.format == "PNG" and sheet.width == 6 * TILE

    steps = json.loads((ws / "steps.json").read_text())
    assert {"mine", "review", "export", "remine", "cam_baseline", "cam_wood"} <= set(steps)
    again = []
    run_demo(config, log=again.append)
    assert sum("up to date, reused" in line for line in again) == 4  # mine, review, export, remine
    assert json.loads((ws / "steps.json").read_text()) == steps
