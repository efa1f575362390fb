"""The whole demo, tiny: the report's numbers are the ones its steps wrote, and a re-run reuses
every step.

Each number in ``report.md`` and in the step log is read back and compared with its source: the
evaluations (``cams/<model>/eval.json``), the exported manifest and the curation store.
"""

import json
import re
import statistics
from pathlib import Path

import pytest
from PIL import Image

from app.demo.report import HARDNESS_THRESHOLD, TILE
from app.demo.run import DemoConfig, run_demo
from curate import store
from wood_train.data.voc import read_class_names
from wood_train.manifest.validate import validate_manifest
from wood_train.world.truth import read_pool_truth

ROUNDING = 5e-4  # the report prints three decimals


def md_table(text: str, header: str) -> list[dict[str, str]]:
    """The rows of the Markdown table whose header line starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    names = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(names, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def number(cell: str) -> float | None:
    return None if cell == "n/a" else float(cell)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("demo")
    config = DemoConfig(out=tmp_path / "ws", manifest_dir=tmp_path / "manifests" / "demo-world", tiny=True,
                        cam_scales=(1.0, 0.5), queue_size=30)  # fmt: skip
    lines: list[str] = []
    report = run_demo(config, log=lines.append)
    return config, tmp_path / "ws", report.read_text(), lines


def evaluation(ws: Path, name: str) -> dict:
    return json.loads((ws / "cams" / name / "eval.json").read_text())["evaluation"]


def test_report_seed_tables_are_the_evaluations_written(demo):
    _, ws, text, lines = demo
    base, wood = evaluation(ws, "baseline"), evaluation(ws, "wood")
    metrics = {row["metric"]: row for row in md_table(text, "| metric | baseline | W-OoD |")}
    for metric, key in (("CAM mIoU", "miou"), ("spurious-activation rate", "spurious_activation_rate"),
                        ("best background threshold", "best_threshold")):  # fmt: skip
        assert number(metrics[metric]["baseline"]) == pytest.approx(base[key], abs=ROUNDING)
        assert number(metrics[metric]["W-OoD"]) == pytest.approx(wood[key], abs=ROUNDING)
    per_class = md_table(text, "| class | baseline IoU | W-OoD IoU |")
    assert [row["class"] for row in per_class] == list(base["per_class_iou"])
    for row in per_class:
        for cell, source in ((row["baseline IoU"], base), (row["W-OoD IoU"], wood)):
            want = source["per_class_iou"][row["class"]]
            assert number(cell) == (None if want is None else pytest.approx(want, abs=ROUNDING))
    for name, source in (("baseline", base), ("wood", wood)):
        (line,) = [line for line in lines if line.startswith(f"[evaluate {name}]")]
        assert line == (
            f"[evaluate {name}] CAM mIoU {source['miou']:.3f} at t={source['best_threshold']:.2f}, "
            f"spurious activation {source['spurious_activation_rate']:.3f}"
        )


def test_report_labelling_cost_is_the_store_and_the_manifest(demo):
    config, ws, text, lines = demo
    with store.connect(ws / "curation.db") as conn:
        live = conn.execute("SELECT seconds, source FROM verdicts WHERE undone = 0").fetchall()
        images_in_store = conn.execute("SELECT COUNT(DISTINCT sha256) FROM image_paths").fetchone()[
            0
        ]
    seconds = [r["seconds"] for r in live]
    simulated = sum(r["source"] == "simulated" for r in live)
    assert simulated == len(live) > 0
    assert f"**Verdicts were simulated**: {simulated} of {len(live)} verdicts" in text
    assert f"{images_in_store} pool images were scored" in text
    (cost,) = md_table(text, "| verdicts | simulated minutes |")
    assert int(cost["verdicts"]) == len(live)
    assert float(cost["simulated minutes"]) == pytest.approx(sum(seconds) / 60, abs=0.05)
    assert float(cost["median seconds per verdict"]) == pytest.approx(
        statistics.median(seconds), abs=0.005
    )
    gain = (evaluation(ws, "wood")["miou"] - evaluation(ws, "baseline")["miou"]) * 100
    assert float(cost["mIoU points gained"]) == pytest.approx(gain, abs=0.005)
    assert float(cost["mIoU points per 100 verdicts"]) == pytest.approx(
        gain / len(live) * 100, abs=0.005
    )
    # the manifest the export step wrote: the same verdicts, and the log's counts
    loaded = validate_manifest(
        config.manifest_dir, expected_classes=read_class_names(ws / "world" / "VOC2012")
    )
    assert loaded.meta["labelling_cost"]["verdicts"] == len(live)
    assert loaded.meta["labelling_cost"]["verdicts_by_source"] == {"simulated": len(live)}
    assert set(loaded.rows.verdict) <= {"no_foreground", "contains_foreground"}
    assert (config.manifest_dir / "ood_list.txt").read_text().count("\n") == len(loaded.ood_paths)
    (review,) = [line for line in lines if line.startswith("[review]")]
    assert review.startswith(f"[review] {len(live)} simulated verdicts")
    (export,) = [line for line in lines if line.startswith("[export]")]
    assert export.startswith(
        f"[export] {len(loaded.ood_paths)} hard OoDs of {len(loaded.rows)} reviewed images -> "
    )


def test_report_loop_table_counts_the_stored_scores_of_both_models(demo):
    _, ws, text, _ = demo
    truth = read_pool_truth(ws / "world")
    hard = truth[truth.kind == "hard_ood"]
    with store.connect(ws / "curation.db") as conn:
        mined_with = [r[0] for r in conn.execute(
            "SELECT checkpoint_sha256 FROM runs WHERE command = 'mine' ORDER BY run_id"
        )]  # fmt: skip
        sha_of = {
            Path(r["relpath"]).name: r["sha256"]
            for r in conn.execute("SELECT sha256, relpath FROM image_paths")
        }
        hardness = {
            (r["checkpoint_sha256"], r["sha256"]): r["hardness_score"]
            for r in conn.execute("SELECT checkpoint_sha256, sha256, hardness_score FROM scores")
        }
    baseline_sha, wood_sha = mined_with[0], mined_with[-1]
    assert baseline_sha != wood_sha
    loop = md_table(text, "| cue | class | hard OoDs |")
    assert {row["class"] for row in loop} == {c for cues in hard.cues for c in cues.split(";")}
    for row in loop:
        files = [f for f, cues in zip(hard.file, hard.cues) if row["class"] in cues.split(";")]
        fooled = {
            ck: sum(hardness.get((ck, sha_of[f]), 0.0) > HARDNESS_THRESHOLD for f in files)
            for ck in (baseline_sha, wood_sha)
        }
        assert int(row["hard OoDs"]) == len(files)
        assert int(row["fool baseline"]) == fooled[baseline_sha]
        assert int(row["fool W-OoD"]) == fooled[wood_sha]
        assert int(row["no longer fooled"]) == max(0, fooled[baseline_sha] - fooled[wood_sha])


def test_report_pool_scores_are_the_stored_scores_of_both_models(demo):
    _, ws, text, _ = demo
    truth = read_pool_truth(ws / "world")
    with store.connect(ws / "curation.db") as conn:
        mined_with = [r[0] for r in conn.execute(
            "SELECT checkpoint_sha256 FROM runs WHERE command = 'mine' ORDER BY run_id"
        )]  # fmt: skip
        kind_of = dict(zip(truth.file, truth.kind))
        scores = conn.execute(
            "SELECT s.checkpoint_sha256, s.hardness_score, p.relpath FROM scores s "
            "JOIN image_paths p USING (sha256)"
        ).fetchall()
    rows = {row["model"]: row for row in md_table(text, "| model | median hard OoD |")}
    assert list(rows) == ["baseline", "W-OoD"]
    for model, checkpoint in (("baseline", mined_with[0]), ("W-OoD", mined_with[-1])):
        by_kind = {}
        for r in scores:
            if r["checkpoint_sha256"] == checkpoint:
                by_kind.setdefault(kind_of[Path(r["relpath"]).name], []).append(r["hardness_score"])
        for kind, label in (("hard_ood", "hard OoD"), ("easy_ood", "easy OoD"),
                            ("contaminated", "contaminated")):  # fmt: skip
            want = statistics.median(by_kind[kind])
            assert number(rows[model][f"median {label}"]) == pytest.approx(want, abs=ROUNDING)
        hard, easy = by_kind["hard_ood"], by_kind["easy_ood"]
        pairs = sum((h > e) + 0.5 * (h == e) for h in hard for e in easy) / (len(hard) * len(easy))
        assert number(rows[model]["AUROC hard vs easy"]) == pytest.approx(pairs, abs=ROUNDING)
    with Image.open(ws / "fig_scores.png") as fig:
        assert fig.format == "PNG" and fig.width == 2 * fig.height * 420 // 300


def test_report_figures_and_the_commands_to_run_by_hand(demo):
    _, ws, text, _ = demo
    for heading in (
        "### Per-class IoU",
        "## The loop",
        "## Labelling cost",
        "## Does curation pay? Label efficiency",
        "hardood annotate --db",
    ):
        assert heading in text
    with Image.open(ws / "fig_cams.png") as fig:
        assert fig.format == "PNG" and fig.width == 4 * TILE
        assert (fig.height - 18) % TILE == 0 and fig.height > TILE
    with store.connect(ws / "curation.db") as conn:
        queued = conn.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
    rows = -(-min(24, queued) // 6)
    with Image.open(ws / "fig_queue.png") as sheet:
        assert sheet.format == "PNG" and sheet.width == 6 * TILE
        assert sheet.height == max(1, rows) * (TILE + 30)
    assert re.search(r"hardood mine --preset world --db \S+curation\.db --checkpoint", text)


def test_a_rerun_reuses_every_finished_step(demo):
    config, ws, _, _ = demo
    steps = json.loads((ws / "steps.json").read_text())
    assert {"mine", "review", "export", "remine", "cam_baseline", "cam_wood"} <= set(steps)
    again: list[str] = []
    run_demo(config, log=again.append)
    assert sum("up to date, reused" in line for line in again) == 4  # mine, review, export, remine
    assert json.loads((ws / "steps.json").read_text()) == steps


def test_the_worlds_truth_supplies_gold_and_measures_each_annotator(demo):
    from app.demo.simulated_annotators import truth_by_sha
    from curate.review import gold

    _, ws, _, _ = demo
    truth = read_pool_truth(ws / "world")
    with store.connect(ws / "curation.db") as conn:
        contains = truth_by_sha(conn, truth, ws / "world" / "pool")
        items = gold.gold_items(conn)
        accuracy = gold.gold_accuracy(conn).set_index("annotator")
        votes = conn.execute(
            "SELECT v.annotator, v.verdict, g.verdict FROM verdicts v JOIN gold g USING (sha256) "
            "WHERE v.undone = 0"
        ).fetchall()
    assert len(items) >= 1 and set(items["source"]) == {"truth"}
    for sha, answer in zip(items["sha256"], items["verdict"]):
        assert answer == ("contains_foreground" if contains[sha] else "no_foreground")
    for name in {v[0] for v in votes}:
        mine = [v for v in votes if v[0] == name]
        assert accuracy.loc[name, "gold_judged"] == len(mine)
        assert accuracy.loc[name, "gold_correct"] == sum(v[1] == v[2] for v in mine)
