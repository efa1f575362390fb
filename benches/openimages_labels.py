"""Reading OpenImages' image-label files at full size: seconds and peak memory for 10M rows.

Writes a human-verified image-label CSV in the published format (``ImageID,Source,LabelName,
Confidence``) with ``--rows`` rows: 16-hex ImageIDs with about 6 labels each, MIDs drawn from
20,000 classes, of which the MIDs of the shipped VOC map (5% of the rows, as person, car and
the like are frequent) matter; a third of the rows are Confidence 0. Then it runs
``scan_label_files`` in a fresh process, once keeping every image and once only the rows of a
10,000-image pool, and prints seconds, rows/s and the process's peak RSS.

Run: ``python benches/openimages_labels.py [--rows 10000000] [--repeats 3] [--work-dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.ingest.pool_sources import load_tag_map, tag_map_mids  # noqa: E402

N_CLASSES = 20_000
RELEVANT_SHARE = 0.05
LABELS_PER_IMAGE = 6
POOL_IMAGES = 10_000


def voc_mids() -> list[str]:
    return sorted(tag_map_mids(load_tag_map()))


def write_labels(path: Path, rows: int, seed: int = 0) -> list[str]:
    """The synthetic human-label file; returns a pool of image ids drawn from it."""
    rng = np.random.default_rng(seed)
    relevant = np.array(voc_mids())
    others = np.array([f"/m/0{i:06x}" for i in range(N_CLASSES - len(relevant))])
    n_images = rows // LABELS_PER_IMAGE + 1
    ids = np.array([f"{v:016x}" for v in rng.integers(0, 2**63, n_images, dtype=np.int64)])
    chunk = 1_000_000
    schema = pa.schema([(c, pa.string()) for c in ("ImageID", "Source", "LabelName", "Confidence")])
    unquoted = pacsv.WriteOptions(quoting_style="none")  # as published: no quotes
    with pacsv.CSVWriter(path, schema, write_options=unquoted) as w:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            image = ids[(np.arange(start, start + n) // LABELS_PER_IMAGE)]
            pick = rng.random(n) < RELEVANT_SHARE
            mids = np.where(pick, relevant[rng.integers(0, len(relevant), n)],
                            others[rng.integers(0, len(others), n)])  # fmt: skip
            confidence = np.where(rng.random(n) < 1 / 3, "0", "1")
            source = np.where(rng.random(n) < 0.5, "verification", "crowdsource-verification")
            w.write_table(pa.table({"ImageID": image.tolist(), "Source": source.tolist(),
                                    "LabelName": mids.tolist(), "Confidence": confidence.tolist()}))  # fmt: skip
    return [str(i) for i in rng.choice(ids, POOL_IMAGES, replace=False)]


SCAN = """
import json, sys, time
sys.path.insert(0, {repo!r})
from benches.peak_memory import peak_rss_mb
from curate.ingest.openimages import scan_label_files
from curate.ingest.pool_sources import load_tag_map, tag_map_mids
mids = sorted(tag_map_mids(load_tag_map()))
pool = json.load(open({pool!r})) if {pool!r} else None
start = time.perf_counter()
scan = scan_label_files([{labels!r}], mids, image_ids=pool)
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "rows": scan.counts["rows"],
                  "kept": scan.counts["kept_rows"], "present": len(scan.present),
                  "rss_mb": peak_rss_mb()}}))
"""


def run_scan(labels: Path, pool_file: Path | None) -> dict:
    repo = str(Path(__file__).resolve().parents[1])
    code = SCAN.format(repo=repo, labels=str(labels), pool=str(pool_file) if pool_file else "")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="openimages_labels_"))
    work.mkdir(parents=True, exist_ok=True)
    labels = work / "oidv7-train-annotations-human-imagelabels.csv"
    start = time.perf_counter()
    pool = write_labels(labels, args.rows)
    pool_file = work / "pool_ids.json"
    pool_file.write_text(json.dumps(pool))
    written = time.perf_counter() - start
    size_mb = labels.stat().st_size / 2**20
    print(f"wrote {args.rows:,} rows ({size_mb:.0f} MB) in {written:.0f} s; {os.cpu_count()} cores")
    print(
        f"| keep | seconds, median of {args.repeats} (range) | rows/s | peak RSS (MB) | rows kept | images holding a VOC class |"
    )
    print("|---|---|---|---|---|---|")
    run_scan(labels, pool_file)  # warm the page cache, so both rows read from memory
    for name, pool_arg in (("rows of the VOC MIDs", None), (f"... of a {POOL_IMAGES:,}-image pool", pool_file)):  # fmt: skip
        runs = [run_scan(labels, pool_arg) for _ in range(args.repeats)]
        seconds = sorted(r["seconds"] for r in runs)
        r = runs[0]
        print(f"| {name} | {statistics.median(seconds):.1f} ({seconds[0]:.1f}-{seconds[-1]:.1f}) | "
              f"{r['rows'] / statistics.median(seconds):,.0f} | "
              f"{max(x['rss_mb'] for x in runs):.0f} | {r['kept']:,} | {r['present']:,} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
