"""The demo's report: ``report.md`` with tables and PNG figures a newcomer can believe.

Figures are drawn with Pillow: eight evaluation images (image | ground truth | baseline CAM | W-OoD
CAM), the pool's score histograms under both models, a contact sheet of the top of the review
queue with each image's reason string, and the label-efficiency figure that
``benches/label_efficiency.py`` drew (copied from ``docs/img``; the demo does not re-run it).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from app.demo.pool_scores import pool_hardness, score_histograms, score_table
from app.demo.simulated_annotators import truth_by_sha
from curate import store
from curate.queue.build import queue_frame
from wood_train.cam.make import cam_overlay, load_cam
from wood_train.data.imageio import read_image, read_label_png, voc_palette
from wood_train.data.voc import image_path, mask_path, read_class_names, read_split
from wood_train.wood.statistics_figure import plot_wood_statistics
from wood_train.world.truth import read_pool_truth

TILE = 128  # pixels per figure tile
# drawn by `python benches/label_efficiency.py` and committed; the demo shows it, never re-runs it
LABEL_EFFICIENCY_FIGURE = (
    Path(__file__).resolve().parents[2] / "docs" / "img" / "label_efficiency.png"
)


def _font(size: int = 11):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


def _rel(path) -> str:
    """A path relative to the working directory when it lies below it (reports stay portable)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


HARDNESS_THRESHOLD = 0.5  # the mining preset's min_hardness: "fools the classifier"


def _tile(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array).resize((TILE, TILE), Image.NEAREST)


def _label_image(mask: np.ndarray) -> np.ndarray:
    img = Image.fromarray(mask, "P")
    img.putpalette(voc_palette())
    return np.asarray(img.convert("RGB"))


def cam_figure(
    voc_root: Path, split: str, cam_dirs: dict[str, Path], out: Path, n: int = 8
) -> Path:
    """Rows of image | ground truth | one CAM overlay per model, for the first ``n`` cue images."""
    ids = [i for i in read_split(voc_root, split) if (voc_root / "CueMasks" / f"{i}.png").is_file()]
    chosen = [i for i in ids if read_label_png(voc_root / "CueMasks" / f"{i}.png").any()][:n]
    columns = ["image", "ground truth", *cam_dirs]
    header = 18
    sheet = Image.new("RGB", (TILE * len(columns), header + TILE * len(chosen)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(columns):
        draw.text(
            (c * TILE + 4, 3), title if title != "wood" else "W-OoD", fill="black", font=_font(12)
        )
    for r, image_id in enumerate(chosen):
        image = read_image(image_path(voc_root, image_id))
        tiles = [image, _label_image(read_label_png(mask_path(voc_root, image_id)))]
        for cam_dir in cam_dirs.values():
            _, high_res = load_cam(cam_dir / f"{image_id}.npy")
            tiles.append(cam_overlay(image, high_res))
        for c, array in enumerate(tiles):
            sheet.paste(_tile(array), (c * TILE, header + r * TILE))
    sheet.save(out)
    return out


def queue_sheet(conn: sqlite3.Connection, out: Path, n: int = 24, per_row: int = 6) -> Path:
    """Contact sheet of the top ``n`` queue images with their reason strings."""
    frame = queue_frame(conn, top=n)
    caption = 30
    rows = max(1, -(-len(frame) // per_row))
    sheet = Image.new("RGB", (TILE * per_row, rows * (TILE + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, row in enumerate(frame.itertuples()):
        x, y = (k % per_row) * TILE, (k // per_row) * (TILE + caption)
        sheet.paste(_tile(read_image(row.path)), (x, y))
        reason = str(row.reason).replace("·", "|")
        head, _, tail = reason.partition(" | ")
        draw.text((x + 3, y + TILE + 2), f"#{row.rank} {head}", fill="black", font=_font(11))
        draw.text((x + 3, y + TILE + 15), tail[:24], fill="dimgray", font=_font(10))
    sheet.save(out)
    return out


def _hardness(conn: sqlite3.Connection, checkpoint_sha: str) -> pd.Series:
    rows = conn.execute(
        "SELECT sha256, hardness_score FROM scores WHERE checkpoint_sha256 = ?",
        (checkpoint_sha,),
    ).fetchall()
    return pd.Series({r["sha256"]: r["hardness_score"] for r in rows}, dtype=float)


def loop_table(conn: sqlite3.Connection, world, baseline_sha: str, wood_sha: str) -> pd.DataFrame:
    """Per cue: pool hard OoDs that fool the baseline, and how many still fool the W-OoD model."""
    truth = read_pool_truth(world.root)
    cue_of = {f: c for f, c in zip(truth.file, truth.cues) if isinstance(c, str) and c}
    sha_to_file = _sha_to_file(conn, world.pool_dir)
    base, wood = _hardness(conn, baseline_sha), _hardness(conn, wood_sha)
    cue_names = dict(zip(read_class_names(world.voc_root), _cue_names(world.voc_root)))
    rows = {}
    for sha, file in sha_to_file.items():
        if file not in cue_of or truth.loc[truth.file == file, "kind"].item() != "hard_ood":
            continue
        for cls in cue_of[file].split(";"):
            row = rows.setdefault(cls, {"cue": cue_names.get(cls, cls), "class": cls, "hard OoDs": 0,
                                        "fool baseline": 0, "fool W-OoD": 0})  # fmt: skip
            row["hard OoDs"] += 1
            fooled_base = base.get(sha, 0.0) > HARDNESS_THRESHOLD
            row["fool baseline"] += int(fooled_base)
            row["fool W-OoD"] += int(wood.get(sha, 0.0) > HARDNESS_THRESHOLD)
    table = pd.DataFrame(list(rows.values()))
    if not table.empty:
        table["no longer fooled"] = (table["fool baseline"] - table["fool W-OoD"]).clip(lower=0)
    return table


def _cue_names(voc_root: Path) -> list[str]:
    path = voc_root / "cue_names.txt"
    return path.read_text().split() if path.is_file() else []


def _sha_to_file(conn: sqlite3.Connection, pool_dir: Path) -> dict[str, str]:
    pool_dir = Path(pool_dir).resolve()
    rows = conn.execute(
        "SELECT p.sha256, p.relpath, r.path FROM image_paths p JOIN roots r USING (root_id)"
    ).fetchall()
    return {
        r["sha256"]: Path(r["relpath"]).name
        for r in rows
        if (Path(r["path"]) / r["relpath"]).parent.resolve() == pool_dir
    }


def _md_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return "n/a" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def _verdict_cost(conn: sqlite3.Connection) -> dict:
    rows = conn.execute("SELECT seconds, source FROM verdicts WHERE undone = 0").fetchall()
    seconds = [r["seconds"] or 0.0 for r in rows]
    return {
        "verdicts": len(rows),
        "simulated": sum(r["source"] == "simulated" for r in rows),
        "seconds": float(np.sum(seconds)) if seconds else 0.0,
        "median_seconds": float(np.median(seconds)) if seconds else 0.0,
    }


def write_report(
    root, world, db, manifest_dir, baseline, wood, evaluations, config, seconds
) -> Path:
    """Write ``report.md`` and its figures into the workspace ``root``; returns the report path."""
    root = Path(root)
    cam_dirs = {"baseline": root / "cams" / "baseline", "wood": root / "cams" / "wood"}
    cam_figure(world.voc_root, config.eval_split, cam_dirs, root / "fig_cams.png")
    with store.connect(db) as conn, store.transaction(conn):  # one snapshot of the store
        queue_sheet(conn, root / "fig_queue.png")
        loop = loop_table(conn, world, baseline.weights_sha256, wood.weights_sha256)
        cost = _verdict_cost(conn)
        truth_contains = truth_by_sha(conn, read_pool_truth(world.root), world.pool_dir)
        scores = pool_hardness(
            conn, world, {"baseline": baseline.weights_sha256, "W-OoD": wood.weights_sha256}
        )
    plot_wood_statistics(Path(wood.checkpoint).parent / "train_log.csv", root / "fig_wood_loss.png")
    score_histograms(scores, root / "fig_scores.png")
    label_efficiency = _label_efficiency_section(root)
    base_eval, wood_eval = evaluations["baseline"], evaluations["wood"]
    names = list(base_eval.per_class_iou)
    metrics = pd.DataFrame(
        [
            {"metric": "CAM mIoU", "baseline": base_eval.miou, "W-OoD": wood_eval.miou},
            {
                "metric": "spurious-activation rate",
                "baseline": base_eval.spurious_activation_rate,
                "W-OoD": wood_eval.spurious_activation_rate,
            },  # fmt: skip
            {
                "metric": "best background threshold",
                "baseline": base_eval.best_threshold,
                "W-OoD": wood_eval.best_threshold,
            },  # fmt: skip
            {
                "metric": "val classification mAP",
                "baseline": baseline.val_metrics.get("val_map", float("nan")),
                "W-OoD": wood.val_metrics.get("val_map", float("nan")),
            },  # fmt: skip
        ]
    )
    per_class = pd.DataFrame(
        [
            {
                "class": n,
                "baseline IoU": base_eval.per_class_iou[n],
                "W-OoD IoU": wood_eval.per_class_iou[n],
            }
            for n in names
        ]
    )
    gain = (wood_eval.miou - base_eval.miou) * 100
    per_100 = gain / cost["verdicts"] * 100 if cost["verdicts"] else float("nan")
    world_root, voc, pool = _rel(world.root), _rel(world.voc_root), _rel(world.pool_dir)
    db, ws, manifest = _rel(db), _rel(root), _rel(manifest_dir)
    base_ck, wood_ck = _rel(baseline.checkpoint), _rel(wood.checkpoint)
    text = f"""# hardood demo report

Everything below ran on the embedded spurious-cue world (`{_rel(world.root)}`); this run took
{seconds / 60:.1f} minutes (steps reused from an earlier run are not counted).
**Verdicts were simulated**: {cost["simulated"]} of {cost["verdicts"]} verdicts come from simulated
annotators that read the world's truth and are wrong on purpose {config.error_rate:.0%} of the time.

## Seeds: baseline vs W-OoD (CAMs on the `{config.eval_split}` split)

{_md_table(metrics)}

The spurious-activation rate is the fraction of context-cue pixels (rails, water, sky, grass,
road, foliage) that the CAM seed labels as foreground: the error W-OoD exists to fix.

![CAMs](fig_cams.png)

What W-OoD's distance loss did at every step (tau, pushed fraction, pull and push, each loss term):

![W-OoD loss statistics](fig_wood_loss.png)

### Per-class IoU

{_md_table(per_class)}

## How each model scores the pool

Hardness (top-class probability) of the pool's hard OoDs (a cue, no object), easy OoDs (no cue, no
object) and contaminated images (objects that tags missed), read from the store; the world's
truth names the kinds. The baseline ranks hard OoDs above easy ones, which is what makes mining
pay; after W-OoD the hard OoDs fall while contaminated images, which do hold objects, stay high.

{_md_table(score_table(scores))}

![pool scores](fig_scores.png)

{label_efficiency}

## The next round's review queue (top 24)

{len(truth_contains)} pool images were scored. After W-OoD training the pool was mined again with
the new model. The store's queue now ranks what still fools it, reviewed images excluded.

![queue](fig_queue.png)

## The loop: what still fools the classifier

Pool hard OoDs (cue, no object) scored above hardness {HARDNESS_THRESHOLD} by each model. The ones
that still fool W-OoD are the next round's queue (the store's queue now holds the re-mined ranking).

{_md_table(loop) if not loop.empty else "(no hard OoDs in this pool)"}

## Labelling cost

| verdicts | simulated minutes | median seconds per verdict | mIoU points gained | mIoU points per 100 verdicts |
|---|---|---|---|---|
| {cost["verdicts"]} | {cost["seconds"] / 60:.1f} | {cost["median_seconds"]:.2f} | {gain:.2f} | {per_100:.2f} |

## Run each step by hand

```bash
hardood world --out {world_root}
hardood train --preset world --voc-root {voc} --out-dir {ws}/runs/baseline
hardood mine --preset world --db {db} --checkpoint {base_ck} --pool {pool}
hardood queue --db {db} --top 20
hardood annotate --db {db}          # the real app on this store
hardood export --db {db} --out {manifest} --force
hardood train --preset world --voc-root {voc} --out-dir {ws}/runs/wood \\
    --init-checkpoint {base_ck} --ood-manifest {manifest} --frozen-bn \\
    --lr {config.wood_lr} --epochs {config.wood_epochs} --num-centers {config.num_centers}
hardood cam --checkpoint {wood_ck} --voc-root {voc} --split {config.eval_split} --out {ws}/cams/wood
hardood evaluate --cam-dir {ws}/cams/wood --voc-root {voc} --split {config.eval_split}
```
"""
    path = root / "report.md"
    path.write_text(text)
    return path


def _label_efficiency_section(root: Path) -> str:
    """The committed label-efficiency figure, copied beside the report, with where it came from."""
    head = "## Does curation pay? Label efficiency\n\n"
    if not LABEL_EFFICIENCY_FIGURE.is_file():
        return head + "Run `python benches/label_efficiency.py` to draw the figure."
    shutil.copyfile(LABEL_EFFICIENCY_FIGURE, root / "fig_label_efficiency.png")
    return head + (
        "CAM mIoU on held-out `val` against the number of verdicts spent, for hardood's queue and "
        "for a random sample of the pool. Drawn by `python benches/label_efficiency.py` on the "
        "default world (the README gives the command, the seeds and the table); this demo does "
        "not re-run it.\n\n![label efficiency](fig_label_efficiency.png)"
    )
