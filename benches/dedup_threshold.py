"""Pick the near-duplicate threshold on a mined world: recall and false merges per threshold.

The world's pool holds near-duplicates (JPEG re-encodes, 0.8-1.25x resizes, 3-8% crops) listed in
``truth/pool_truth.csv``. After ``hardood mine`` over that pool, this script reads the stored
embeddings, labels each copy with its original and sweeps the cosine threshold of
``benches.vector_grouping.group_by_cosine``:

    hardood world --out world --n-pool-duplicates 300
    hardood train --preset world --voc-root world/VOC2012 --out-dir runs/world
    hardood mine --preset world --checkpoint runs/world/model.pt --pool world/pool --db pool.db
    python benches/dedup_threshold.py --db pool.db --world world --embedder thumb6

``--embedder classifier`` (the default) sweeps the classifier's embeddings instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benches.vector_grouping import (  # noqa: E402
    DEFAULT_COSINE_THRESHOLD,
    threshold_sweep,
    tune_threshold,
)
from curate import store  # noqa: E402
from curate.neighbours.similar import resolve_embedder  # noqa: E402
from curate.neighbours.vector_index import EmbeddingFile  # noqa: E402
from wood_train.world.truth import read_pool_truth  # noqa: E402


def duplicate_labels(conn, world: Path, keys: list[str]) -> list[str | None]:
    """Each key's original file name when it is a copy or has copies, else None."""
    truth = read_pool_truth(world)
    original_of = {r.file: r.duplicate_of for r in truth.itertuples() if r.duplicate_of}
    has_copies = set(original_of.values())
    name_of = {
        r["sha256"]: Path(r["relpath"]).name
        for r in conn.execute("SELECT sha256, relpath FROM image_paths ORDER BY relpath DESC")
    }
    labels = []
    for key in keys:
        name = name_of.get(key)
        label = original_of.get(name, name if name in has_copies else None)
        labels.append(label)
    return labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, required=True, help="store mined over the world pool")
    parser.add_argument("--world", type=Path, required=True, help="the world folder")
    parser.add_argument("--embedder", default="classifier", help="stored embedder (or prefix)")
    parser.add_argument("--max-false-merge", type=float, default=0.01)
    args = parser.parse_args(argv)

    with store.connect(args.db) as conn:
        name = resolve_embedder(conn, args.embedder)
        keys, vectors = EmbeddingFile.open(conn, name).load_all()
        labels = duplicate_labels(conn, args.world, keys)
    n_copies = sum(label is not None for label in labels)
    print(f"{name}: {len(keys)} images, {n_copies} in {len(set(labels) - {None})} true groups")
    sweep = threshold_sweep(vectors, keys, labels)
    print(sweep.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    threshold, recall, false_merge = tune_threshold(
        vectors, keys, labels, max_false_merge=args.max_false_merge
    )
    print(
        f"\nchosen threshold {threshold} (recall {recall:.4f}, false merges {false_merge:.4f}, "
        f"limit {args.max_false_merge}); current default {DEFAULT_COSINE_THRESHOLD}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
