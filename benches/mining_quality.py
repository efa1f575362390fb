"""How well `hardood mine` finds the hard OoDs of the spurious-cue world, and groups its duplicates.

Generates the default world (if missing), gets a baseline classifier (``--checkpoint``, else
``hardood train`` with the world preset, reused when already trained, or with ``--trainer quick``
the small stand-in ``train_quick_baseline`` below), runs ``mine`` over
the whole pool with every image ranked, then reads the pool truth (mining never does) and prints:

- M = hard OoDs + contaminated images in the pool after collapsing the injected duplicates, and
  the share of them in the top M of the queue (target >= 0.9);
- hard-OoD recall at M; precision/recall at several cut-offs;
- near-duplicate grouping recall (target >= 0.95) and false-merge rate (target <= 0.01) at the
  mining threshold, a sweep of the aligned-similarity threshold (the data the default
  ``dup_threshold`` was tuned on) and, for contrast, a cosine threshold on classifier embeddings.

Run: ``python benches/mining_quality.py [--work-dir runs/benches] [--checkpoint CK]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benches.vector_grouping import grouping_quality, threshold_sweep  # noqa: E402
from curate import store  # noqa: E402
from curate.mine import mine  # noqa: E402
from curate.mine_config import PRESETS  # noqa: E402
from curate.neighbours.near_duplicates import (  # noqa: E402
    CONFIRM_EMBEDDER,
    DEFAULT_DUP_CANDIDATE_THRESHOLD,
    THUMB_EMBEDDER,
    candidate_pairs,
    groups_from_pairs,
)
from curate.neighbours.vector_index import EmbeddingFile  # noqa: E402
from curate.queue.build import queue_frame  # noqa: E402
from wood_train.config import replace  # noqa: E402
from wood_train.world.config import WORLD_PRESETS  # noqa: E402
from wood_train.world.generate import find_world, generate_world  # noqa: E402
from wood_train.world.truth import read_pool_truth  # noqa: E402

POSITIVE_KINDS = ("hard_ood", "contaminated")


def train_quick_baseline(voc_root: Path, out_path: Path, epochs: int = 6, seed: int = 0) -> Path:
    """A small resnet18 CAM classifier on the world's train split (stand-in for `hardood train`)."""
    from wood_train.data.datasets import collate, voc_classification_dataset
    from wood_train.data.transforms import TrainTransform
    from wood_train.model.cam_net import build_cam_net
    from wood_train.model.checkpoint import save_checkpoint
    from wood_train.progress import progress

    torch.manual_seed(seed)
    transform = TrainTransform(resize_long=(56, 80), crop=64, hflip=True)
    dataset, _, class_names = voc_classification_dataset(voc_root, "train", transform, seed)
    model = build_cam_net("resnet18", len(class_names), output_stride=16, frozen_bn=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    steps = epochs * (len(dataset) // 32)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (1 - s / steps) ** 0.9)
    model.train()
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=32, shuffle=True, drop_last=True, collate_fn=collate, num_workers=1,
            generator=torch.Generator().manual_seed(seed + epoch),
        )  # fmt: skip
        for images, labels, _ in progress(loader, desc=f"quick baseline {epoch + 1}/{epochs}"):
            loss = torch.nn.functional.multilabel_soft_margin_loss(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    save_checkpoint(out_path, model.eval(), class_names, {"crop": 64, "trainer": "quick"})
    return out_path


def baseline_checkpoint(args, world) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    if args.trainer == "hardood":
        from wood_train.train import train
        from wood_train.train_config import PRESETS as TRAIN_PRESETS

        config = replace(TRAIN_PRESETS["world"], voc_root=world.voc_root,
                         out_dir=args.work_dir / "baseline")  # fmt: skip
        return Path(train(config).checkpoint)
    path = args.work_dir / "quick_baseline.pt"
    return path if path.is_file() else train_quick_baseline(world.voc_root, path)


def true_groups(truth: pd.DataFrame) -> pd.Series:
    """Each pool file's true picture: itself, or the file it is a near duplicate of."""
    return truth["duplicate_of"].where(truth["duplicate_of"] != "", truth["file"])


def ranking_table(queue: pd.DataFrame, truth: pd.DataFrame, cutoffs: list[int]) -> pd.DataFrame:
    info = truth.assign(group=true_groups(truth)).set_index("file")
    files = [Path(p).name for p in queue["path"]]
    kinds = info.loc[files, "kind"].to_numpy()
    groups = info.loc[files, "group"].to_numpy()
    positives = info[info["kind"].isin(POSITIVE_KINDS)]["group"].nunique()
    hard = info[info["kind"] == "hard_ood"]["group"].nunique()
    rows = []
    for k in cutoffs:
        top_kinds, top_groups = kinds[:k], groups[:k]
        is_pos = np.isin(top_kinds, POSITIVE_KINDS)
        rows.append(
            {
                "top_k": k,
                "precision": is_pos.mean(),
                "recall": len(set(top_groups[is_pos])) / positives,
                "hard_precision": (top_kinds == "hard_ood").mean(),
                "hard_recall": len(set(top_groups[top_kinds == "hard_ood"])) / hard,
                "easy_in_top": int((top_kinds == "easy_ood").sum()),
            }
        )
    return pd.DataFrame(rows)


def dedup_quality(conn, truth: pd.DataFrame, classifier_embedder: str):
    """Grouping quality of the stored dup_groups, and sweeps of the two ways to group."""
    info = truth.assign(group=true_groups(truth)).set_index("file")
    rows = conn.execute(
        "SELECT p.relpath, d.sha256, d.representative, s.hardness_score FROM dup_groups d "
        "JOIN image_paths p USING (sha256) JOIN scores s USING (sha256)"
    ).fetchall()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=["file", "sha256", "rep", "hardness"])
    frame = frame.drop_duplicates("sha256").reset_index(drop=True)
    labels = info.loc[frame["file"], "group"].to_numpy()
    recall, false_merge = grouping_quality(frame["rep"].to_numpy(), labels)
    shas = list(frame["sha256"])
    pairs = candidate_pairs(
        EmbeddingFile.open(conn, THUMB_EMBEDDER).load(shas),
        EmbeddingFile.open(conn, CONFIRM_EMBEDDER).load(shas), DEFAULT_DUP_CANDIDATE_THRESHOLD,
    )  # fmt: skip
    aligned = []
    for threshold in (0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995):
        groups = groups_from_pairs(shas, frame["hardness"], pairs, threshold)
        r, f = grouping_quality(groups["representative"].to_numpy(), labels)
        aligned.append({"threshold": threshold, "recall": r, "false_merge": f})
    classifier = threshold_sweep(
        EmbeddingFile(conn, classifier_embedder, 512).load(shas), shas, labels,
        thresholds=(0.95, 0.97, 0.99, 0.995),
    )  # fmt: skip
    return (
        recall,
        false_merge,
        pd.DataFrame(aligned),
        classifier[["threshold", "recall", "false_merge"]],
        len(frame),
        len(pairs),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("runs/benches"))
    parser.add_argument("--checkpoint", type=Path, default=None, help="baseline to mine with")
    parser.add_argument("--trainer", choices=("hardood", "quick"), default="hardood",
                        help="how to get a baseline without --checkpoint")  # fmt: skip
    parser.add_argument("--dup-threshold", type=float, default=None)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)

    world_config = WORLD_PRESETS["default"]
    world = find_world(args.work_dir / "world", world_config) or generate_world(
        world_config, args.work_dir / "world"
    )
    started = time.time()
    checkpoint = baseline_checkpoint(args, world)
    print(f"baseline: {checkpoint} ({time.time() - started:.0f} s)")

    db = args.work_dir / "mining_quality.db"
    store.delete_store(db)
    truth = read_pool_truth(world.root)
    config = replace(
        PRESETS["world"], db=db, checkpoint=checkpoint, pool=(str(world.pool_dir),),
        queue_size=len(truth), min_hardness=0.0, workers=args.workers,
    )  # fmt: skip
    if args.dup_threshold is not None:
        config = replace(config, dup_threshold=args.dup_threshold)
    mine(config)
    with store.connect(db) as conn:
        queue = queue_frame(conn)

    info = truth.assign(group=true_groups(truth))
    m = info[info["kind"].isin(POSITIVE_KINDS)]["group"].nunique()
    cutoffs = sorted({50, 100, 200, m // 2, m, int(1.5 * m)} - {0})
    table = ranking_table(queue, truth, cutoffs)
    at_m = table[table["top_k"] == m].iloc[0]
    print(f"\npool: {len(truth)} files; after dedup {info['group'].nunique()} pictures; "
          f"M = {m} hard OoD + contaminated")  # fmt: skip
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    with store.connect(db) as conn:
        embedder = conn.execute(
            "SELECT DISTINCT embedder FROM embeddings WHERE embedder LIKE 'classifier-%'"
        ).fetchone()[0]
        quality = dedup_quality(conn, truth, embedder)
    recall, false_merge, aligned, classifier, n, n_pairs = quality
    print(f"\nnear duplicates over {n} images; {n_pairs} candidate pairs (thumbnail cosine >= "
          f"{DEFAULT_DUP_CANDIDATE_THRESHOLD}); aligned-similarity threshold sweep:")  # fmt: skip
    print(aligned.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("for contrast, a cosine threshold on the classifier embeddings:")
    print(classifier.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    summary = pd.DataFrame(
        [
            ("share of M in top M", at_m["precision"], ">= 0.90"),
            ("hard-OoD recall at M", at_m["hard_recall"], ""),
            (f"dup grouping recall @ {config.dup_threshold}", recall, ">= 0.95"),
            (f"dup false-merge rate @ {config.dup_threshold}", false_merge, "<= 0.01"),
        ],
        columns=["metric", "value", "target"],
    )
    print("\n" + summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
