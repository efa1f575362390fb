"""The review queue: ranking, per-class quotas, diversity, reasons, duplicates, verdicts, CLI."""

from __future__ import annotations

import dataclasses
import io
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from curate_fixtures import (
    CLASS_NAMES,
    cached_planted_checkpoint,
    cue_image,
    noise_image,
    save_image,
    write_awkward_files,
)
from PIL import Image

from app.cli import parse_args
from curate import store
from curate.ingest.pool_sources import iter_pool
from curate.ingest.register import ingest_pool
from curate.neighbours.near_duplicates import (
    CONFIRM_DIM,
    CONFIRM_EMBEDDER,
    DEFAULT_DUP_THRESHOLD,
    THUMB_DIM,
    THUMB_EMBEDDER,
    aligned_similarity,
    candidate_pairs,
    confirmation_thumbnail,
    group_near_duplicates,
    thumbnail_descriptor,
)
from curate.queue.build import QueueSettings, build_queue, queue_frame
from curate.queue.ranking import order_candidates, reason_text, renumber_clusters
from curate.score.scoring import Scorer, classifier_embedder_name, score_pool
from wood_train.model.checkpoint import load_cam_net

# ---- ranking rules on planted candidate tables ---------------------------------------------


def _frame(rows):
    return pd.DataFrame(rows, columns=["sha256", "top_class", "hardness_score", "cluster"])


def test_hardness_orders_the_queue_when_nothing_else_applies():
    frame = _frame([("a", 0, 0.7, 0), ("b", 1, 0.9, 0), ("c", 2, 0.8, 0), ("d", 0, 0.95, 1)])
    ranked = order_candidates(frame, queue_size=10, max_class_share=1.0)
    assert ranked["sha256"].tolist() == ["d", "b", "c", "a"]
    assert ranked["rank"].tolist() == [1, 2, 3, 4] and not ranked["over_quota"].any()


def test_per_class_quota_lets_other_classes_in_before_a_flooding_class():
    flood = [(f"t{i}", 0, 0.99 - i * 0.001, 0) for i in range(6)]
    frame = _frame(flood + [("b1", 1, 0.80, 0), ("b2", 1, 0.70, 0)])
    ranked = order_candidates(frame, queue_size=4, max_class_share=0.5)
    assert ranked["sha256"].tolist() == ["t0", "t1", "b1", "b2"]
    longer = order_candidates(frame, queue_size=6, max_class_share=0.5)
    assert longer["sha256"].tolist() == ["t0", "t1", "t2", "b1", "b2", "t3"]
    assert longer["over_quota"].tolist() == [False, False, False, False, False, True]


def test_diversity_interleaves_clusters_within_a_hardness_tier():
    # cluster 7 holds three near-equal scenes, cluster 3 one slightly easier scene; all four
    # share the logit tier [4, 5)
    frame = _frame(
        [("x1", 0, 0.993, 7), ("x2", 0, 0.99, 7), ("x3", 0, 0.988, 7), ("y1", 0, 0.985, 3)]
    )
    diverse = order_candidates(frame, 10, hardness_tier=1.0, max_class_share=1.0)
    assert diverse["sha256"].tolist() == ["x1", "y1", "x2", "x3"]
    assert diverse["tier"].tolist() == [4, 4, 4, 4]
    plain = order_candidates(frame, 10, hardness_tier=0.001, max_class_share=1.0)
    assert plain["sha256"].tolist() == ["x1", "x2", "x3", "y1"]
    # a clearly harder image still beats a new cluster
    frame.loc[frame.sha256 == "y1", "hardness_score"] = 0.60
    assert order_candidates(frame, 10, 1.0, 1.0)["sha256"].tolist() == ["x1", "x2", "x3", "y1"]
    with pytest.raises(ValueError, match="hardness_tier must be positive"):
        order_candidates(frame, 10, hardness_tier=0.0)


def test_clusters_are_numbered_from_the_hardest_within_each_class():
    frame = _frame([("a", 0, 0.6, 11), ("b", 0, 0.9, 4), ("c", 0, 0.8, 11), ("d", 1, 0.5, 4)])
    numbered = renumber_clusters(frame).set_index("sha256")
    assert numbered.loc[["a", "b", "c", "d"], "cluster"].tolist() == [2, 1, 2, 1]
    assert numbered.loc[["a", "d"], "n_clusters"].tolist() == [2, 1]
    assert numbered.loc[["a", "b", "c"], "cluster_rank"].tolist() == [1, 0, 0]


def test_saturated_probabilities_are_ordered_by_energy():
    frame = _frame([("a", 0, 1.0, 0), ("b", 0, 1.0, 0), ("c", 1, 1.0, 5)])
    frame["energy_score"] = [17.0, 25.0, 20.0]
    ranked = order_candidates(frame, 10, max_class_share=1.0)
    assert ranked["sha256"].tolist() == ["b", "c", "a"]  # b, c lead their clusters; a is second
    assert "_tie" not in ranked


def test_clip_foreground_score_pushes_a_candidate_down():
    frame = _frame([("a", 0, 0.95, 0), ("b", 1, 0.90, 0)]).assign(clip_fg_score=[0.9, 0.1])
    assert order_candidates(frame, 10, 1.0, 1.0)["sha256"].tolist() == ["a", "b"]
    ranked = order_candidates(frame, 10, 1.0, 1.0, clip_fg_weight=0.2)
    assert ranked["sha256"].tolist() == ["b", "a"]


def test_reason_strings():
    assert reason_text("train", 0.931, 4, 20, group_size=4) == (
        "train 0.93 · cluster 4/20 · 3 near-duplicates"
    )
    assert reason_text("boat", 0.5, 1, 1) == "boat 0.50 · cluster 1/1"
    assert reason_text("bird", 0.77, 2, 3, 2, clip_fg_score=0.4, over_quota=True) == (
        "bird 0.77 · cluster 2/3 · 1 near-duplicate · CLIP foreground 0.40 · "
        "after other classes (bird quota full)"
    )


# ---- near-duplicate groups --------------------------------------------------------------


def _copies(image: np.ndarray) -> dict[str, np.ndarray]:
    """The world's three near-duplicate transforms of ``image`` (64 x 64)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=70)
    jpeg = np.asarray(Image.open(buffer).convert("RGB"))
    resized = np.asarray(Image.fromarray(image).resize((54, 54), Image.BILINEAR))
    cropped = np.ascontiguousarray(image[2:60, 3:61])  # a 6% crop, off centre
    return {"jpeg": jpeg, "resize": resized, "crop": cropped}


def _scene(seed: int) -> np.ndarray:
    """A 64 px boat-cue image with three random blocks of clutter above the band."""
    image = cue_image(1, seed, size=64)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        y, x, h, w = (
            rng.integers(0, 20),
            rng.integers(0, 48),
            rng.integers(6, 12),
            rng.integers(6, 16),
        )
        image[y : y + h, x : x + w] = rng.integers(0, 256, size=3)
    return image


def test_near_duplicates_group_copies_but_not_look_alikes():
    original = _scene(7)
    look_alike = _scene(8)  # the same band and colours, other clutter
    images = {"original": original, **_copies(original), "look_alike": look_alike}
    for name in ("jpeg", "resize", "crop"):
        assert aligned_similarity(original, images[name]) >= DEFAULT_DUP_THRESHOLD, name
    assert aligned_similarity(original, look_alike) < 0.93
    keys = list(images)
    descriptors = np.stack([thumbnail_descriptor(images[k]) for k in keys])
    stored = _ReadRecorder(np.stack([confirmation_thumbnail(images[k]) for k in keys]))
    priority = [0.5, 0.9, 0.6, 0.7, 0.99]  # the JPEG copy is the hardest member
    groups = group_near_duplicates(keys, descriptors, stored, priority).set_index("sha256")
    assert groups.loc["original", "group_size"] == 4
    assert set(groups["representative"].iloc[:4]) == {"jpeg"}
    assert groups.loc["look_alike", "representative"] == "look_alike"
    assert groups.loc["look_alike", "group_size"] == 1
    assert np.isnan(groups.loc["look_alike", "dup_score"])
    assert (groups["dup_score"].iloc[:4] >= DEFAULT_DUP_THRESHOLD).all()
    # the confirmation reads the stored thumbnails of the rows in candidate pairs, and no others
    pairs = candidate_pairs(
        descriptors, np.stack([confirmation_thumbnail(images[k]) for k in keys])
    )
    in_pairs = set(pairs["i"]) | set(pairs["j"])
    assert stored.read == in_pairs and {0, 1, 2, 3} <= in_pairs


class _ReadRecorder:
    """A thumbnail matrix that remembers which rows were read."""

    def __init__(self, rows: np.ndarray):
        self.rows, self.read = rows, set()

    def __getitem__(self, index):
        self.read |= set(np.atleast_1d(np.arange(len(self.rows))[index]).tolist())
        return self.rows[index]

    def __len__(self):
        return len(self.rows)


# ---- build_queue on a scored, planted pool -------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return cached_planted_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def scored_pool(tmp_path_factory, checkpoint):
    """A scored pool: 3 cue images per class (hard), 3 noise images (easy), a planted near
    duplicate of cue0_0 (two pixels changed), an exact copy of cue1_0 and a few bad files."""
    tmp_path = tmp_path_factory.mktemp("scored")
    pool = tmp_path / "pool"
    for k in range(len(CLASS_NAMES)):
        for s in range(3):
            save_image(cue_image(k, 100 + 10 * k + s), pool / f"cue{k}_{s}.png")
    for s in range(3):
        save_image(noise_image(300 + s), pool / f"noise_{s}.png")
    near = cue_image(0, 100)
    near[0, :2] += 1
    save_image(near, pool / "cue0_0_near.png")
    (pool / "cue1_0_copy.png").write_bytes((pool / "cue1_0.png").read_bytes())
    write_awkward_files(pool / "odd")
    model, meta = load_cam_net(checkpoint)
    db = store.open_store(tmp_path / "scored.db")
    with store.connect(db) as conn:
        store.ensure_classes(conn, CLASS_NAMES)
        run_id = store.start_run(conn, "mine", {}, meta["weights_sha256"])
        ingest_pool(conn, iter_pool(pool), fg_tags={}, run_id=run_id)
        scorer = Scorer(model, meta["weights_sha256"], CLASS_NAMES, 32, torch.device("cpu"))
        score_pool(conn, scorer, run_id, batch_size=8, workers=0)
    return {
        "db": db,
        "pool": pool,
        "run_id": run_id,
        "ck": meta["weights_sha256"],
        "embedder": classifier_embedder_name(meta["weights_sha256"]),
        "dim": model.feature_dim,
    }


@pytest.fixture
def mined(scored_pool, tmp_path):
    """A private copy of the scored store (and its embedding files) for one test to change,
    with a connection to it."""
    db = tmp_path / "c.db"
    with store.connect(scored_pool["db"]) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
        shutil.copytree(store.embeddings_dir(src), tmp_path / "c.embeddings")
    with store.connect(db) as conn:
        yield dict(scored_pool, db=db, conn=conn)


SETTINGS = QueueSettings(clusters_per_class=2, min_hardness=0.5)


def _build(m, settings=SETTINGS):
    return build_queue(m["conn"], m["ck"], m["embedder"], m["dim"], m["run_id"], settings)


def _name_of(m):
    with store.transaction(m["conn"]) as conn:
        rows = conn.execute("SELECT sha256, relpath FROM image_paths ORDER BY relpath").fetchall()
    names = {}
    for r in rows:
        names.setdefault(r["sha256"], r["relpath"])
    return names


def test_queue_holds_hard_representatives_only_and_never_a_bad_image(mined):
    queue = _build(mined)
    names = _name_of(mined)
    queued = [names[s] for s in queue["sha256"]]
    # 9 cue images (the exact copy is the same image); the planted near duplicate and its
    # original collapse into one entry; noise is below min_hardness; bad files never enter
    assert len(queue) == 9
    assert sum(n in ("cue0_0.png", "cue0_0_near.png") for n in queued) == 1
    assert not any(n.startswith(("noise", "odd/")) for n in queued)
    assert queue["rank"].tolist() == list(range(1, 10))
    assert (queue["hardness_score"] >= 0.5).all()
    with store.transaction(mined["conn"]) as conn:
        bad_in_queue = conn.execute(
            "SELECT COUNT(*) FROM queue q JOIN images i USING (sha256) WHERE i.status = 'bad'"
        ).fetchone()[0]
        groups = conn.execute("SELECT COUNT(*) FROM dup_groups WHERE group_size = 2").fetchone()[0]
    assert bad_in_queue == 0 and groups == 2
    dup_row = queue[[n.startswith("cue0_0") for n in queued]].iloc[0]
    assert dup_row["group_size"] == 2 and "1 near-duplicate" in dup_row["reason"]
    assert set(queue["class_name"]) == set(CLASS_NAMES)
    for row in queue.itertuples():
        assert row.reason.startswith(f"{row.class_name} {row.hardness_score:.2f} · cluster ")


def test_the_hardest_image_of_a_group_represents_it(mined):
    queue = _build(mined)
    frame = queue_frame(mined["conn"])
    row = frame[frame["sha256"].isin(queue["sha256"]) & frame["group_size"].eq(2)]
    with store.transaction(mined["conn"]) as conn:
        group = conn.execute(
            "SELECT d.sha256, s.hardness_score FROM dup_groups d JOIN scores s USING (sha256) "
            "WHERE d.representative = ?",
            (row["sha256"].iloc[0],),
        ).fetchall()
    assert len(group) == 2
    assert row["hardness_score"].iloc[0] == max(g["hardness_score"] for g in group)


def test_quota_caps_each_class_in_a_short_queue(mined):
    settings = QueueSettings(queue_size=4, max_class_share=0.25)
    queue = _build(mined, settings)
    assert len(queue) == 4
    assert queue["class_name"].iloc[:3].nunique() == 3  # one per class before any second
    assert queue["over_quota"].tolist() == [False, False, False, True]


def test_reviewed_groups_leave_the_queue_and_keep_their_verdicts(mined):
    first = _build(mined)
    names = _name_of(mined)
    by_name = {names[s]: s for s in first["sha256"]}
    reviewed = by_name.get("cue2_1.png")
    group_member = next(s for s, n in names.items() if n == "cue0_0_near.png")
    now = time.time()
    with store.transaction(mined["conn"]) as conn:
        for sha in (reviewed, group_member):
            conn.execute(
                "INSERT INTO verdicts(sha256, annotator, verdict, created_at) VALUES (?, 'ana', "
                "'no_foreground', ?)",
                (sha, now),
            )
        conn.execute(
            "INSERT INTO leases VALUES (?, 'ana', ?, ?)", (first["sha256"].iloc[0], now, now + 60)
        )
    second = _build(mined)
    assert len(second) == len(first) - 2
    remaining = {names[s] for s in second["sha256"]}
    assert "cue2_1.png" not in remaining
    assert not remaining & {"cue0_0.png", "cue0_0_near.png"}  # one verdict covers its group
    with store.transaction(mined["conn"]) as conn:
        assert conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == 2
        assert conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM queue").fetchone()[0] == len(second)


def test_expand_from_verdicts_keeps_unseen_neighbours_at_their_ranked_place(mined):
    short = QueueSettings(queue_size=3, max_class_share=0.3)
    first = _build(mined, short)
    names = _name_of(mined)
    assert sorted(n[:4] for n in map(names.get, first["sha256"])) == ["cue0", "cue1", "cue2"]
    confirmed = next(s for s in first["sha256"] if names[s].startswith("cue1"))
    with store.transaction(mined["conn"], immediate=True) as conn:
        conn.execute(
            "INSERT INTO verdicts(sha256, annotator, verdict, created_at) "
            "VALUES (?, 'ana', 'no_foreground', ?)",
            (confirmed, time.time()),
        )
    expand = dataclasses.replace(
        short, expand_from_verdicts=True, expand_k=2, expand_min_similarity=0.0
    )
    queue = _build(mined, expand)
    plain = _build(mined, dataclasses.replace(expand, expand_from_verdicts=False))
    # the rest of its scene type, which the short queue left out, joins the queue
    others = {f"cue1_{i}.png" for i in range(3)} - {names[confirmed]}
    expanded = queue[queue["expanded_from"].notna()]
    assert {names[s] for s in expanded["sha256"]} == others
    for reason in expanded["reason"]:
        assert reason.startswith(f"like confirmed hard OoD {confirmed[:8]} (cos ")
        assert " · cue" not in reason and "cluster" in reason  # ranked like every candidate
    # ranked by the same rule: the front of the queue is the plain queue, the quota-deferred
    # neighbour keeps its place after it instead of jumping ahead
    assert queue["sha256"].iloc[:3].tolist() == plain["sha256"].tolist()
    assert confirmed not in set(queue["sha256"])
    assert len(queue) == 4 and queue["sha256"].is_unique
    assert queue["rank"].tolist() == [1, 2, 3, 4]


def _planted_queue_store(tmp_path, rows):
    """A mined store of real, distinct PNGs with planted scores, classifier embeddings and the
    thumbnails scoring stores (near-duplicate descriptors and confirmation thumbnails).

    ``rows``: (name, top_class, hardness_score, embedding) per image. Returns the store path and
    name -> sha256.
    """
    from curate.neighbours.similar import _sha256_of_file
    from curate.neighbours.vector_index import EmbeddingFile

    folder = tmp_path / "pool"
    folder.mkdir()
    rng = np.random.default_rng(0)
    shas, images = {}, {}
    for name, *_ in rows:
        images[name] = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        save_image(images[name], folder / f"{name}.png")
        shas[name] = _sha256_of_file(folder / f"{name}.png")
    db = store.open_store(tmp_path / "planted.db")
    with store.connect(db) as conn, store.transaction(conn, immediate=True):
        run_id = store.start_run(conn, "mine", {}, checkpoint_sha256=PLANTED_CK)
        store.ensure_classes(conn, CLASS_NAMES)
        root_id = store.ensure_root(conn, folder)
        for name, top_class, hardness, _ in rows:
            conn.execute(
                "INSERT INTO images(sha256, width, height, n_bytes, status, added_run) "
                "VALUES (?, 16, 16, 1, 'ok', ?)",
                (shas[name], run_id),
            )
            conn.execute(
                "INSERT INTO image_paths(root_id, relpath, sha256) VALUES (?, ?, ?)",
                (root_id, f"{name}.png", shas[name]),
            )
            probs = np.full(len(CLASS_NAMES), 0.01)
            probs[top_class] = hardness
            conn.execute(
                "INSERT INTO scores(sha256, checkpoint_sha256, run_id, probs, top_class, "
                "top_score, hardness_score) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (shas[name], PLANTED_CK, run_id, store.encode_probs(probs), top_class, hardness,
                 hardness),
            )  # fmt: skip
        keys = [shas[name] for name, *_ in rows]
        vectors = np.stack([np.asarray(v, np.float32) for *_, v in rows])
        EmbeddingFile(conn, PLANTED_EMBEDDER, vectors.shape[1]).append(keys, vectors)
        thumbs = np.stack([thumbnail_descriptor(images[name]) for name, *_ in rows])
        EmbeddingFile(conn, THUMB_EMBEDDER, THUMB_DIM).append(keys, thumbs)
        confirm = np.stack([confirmation_thumbnail(images[name]) for name, *_ in rows])
        EmbeddingFile(conn, CONFIRM_EMBEDDER, CONFIRM_DIM, "uint8").append(keys, confirm)
    return db, shas, run_id


PLANTED_CK = "feed" * 16
PLANTED_EMBEDDER = f"classifier-{PLANTED_CK[:12]}"


def _at(cosine: float, axis: int = 0, dim: int = 8, spin: float = 0.0) -> np.ndarray:
    """A unit vector at ``cosine`` to basis vector ``axis``, turned by ``spin`` in the rest."""
    v = np.zeros(dim)
    v[axis] = cosine
    rest = np.sqrt(max(0.0, 1 - cosine**2))
    other = (axis + 1 + int(spin) % (dim - 1)) % dim
    v[other] = rest
    return v


def test_expanded_neighbours_obey_min_hardness_and_similarity_and_do_not_jump_ahead(tmp_path):
    """The issue's case: after a few verdicts, easy look-alikes of a confirmed hard OoD (cosine
    about 0.7, hardness below --min-hardness) filled the first page ahead of images at 1.00."""
    rows = [(f"seed{i}", 0, 1.0, _at(1.0)) for i in range(3)]  # confirmed hard OoDs
    rows += [(f"easy{i}", i % 3, 0.05 + 0.025 * i, _at(0.7, spin=i)) for i in range(16)]
    rows += [(f"alike{i}", 0, 0.9, _at(0.95, spin=i)) for i in range(2)]  # true hard look-alikes
    rows += [("loose", 1, 0.95, _at(0.8))]  # hard enough, but not similar enough
    rows += [(f"hard{i}", i % 3, 1.0, _at(0.99, axis=4 + i % 3, spin=i)) for i in range(12)]
    db, shas, run_id = _planted_queue_store(tmp_path, rows)
    settings = QueueSettings(queue_size=8, min_hardness=0.5, clusters_per_class=2,
                             max_class_share=1.0)  # fmt: skip
    name_of = {sha: name for name, sha in shas.items()}
    with store.connect(db) as conn:
        first = build_queue(conn, PLANTED_CK, PLANTED_EMBEDDER, 8, run_id, settings)
        assert all(name_of[s].startswith(("seed", "hard")) for s in first["sha256"])
        with store.transaction(conn, immediate=True):
            for i in range(3):
                conn.execute(
                    "INSERT INTO verdicts(sha256, annotator, verdict, created_at) "
                    "VALUES (?, 'ana', 'no_foreground', ?)",
                    (shas[f"seed{i}"], time.time()),
                )
        expand = dataclasses.replace(settings, expand_from_verdicts=True, expand_k=20)
        queue = build_queue(conn, PLANTED_CK, PLANTED_EMBEDDER, 8, run_id, expand)
        plain = build_queue(conn, PLANTED_CK, PLANTED_EMBEDDER, 8, run_id, settings)
    names = [name_of[s] for s in queue["sha256"]]
    assert not any(n.startswith("easy") for n in names)  # below --min-hardness
    assert "loose" not in names  # below --expand-min-similarity, and no room by hardness
    expanded = queue[queue["expanded_from"].notna()]
    assert sorted(name_of[s] for s in expanded["sha256"]) == ["alike0", "alike1"]
    assert all(r.startswith("like confirmed hard OoD ") for r in expanded["reason"])
    # mixed in by hardness: every image at 1.00 keeps its place ahead of the 0.90 look-alikes
    assert queue["sha256"].iloc[:8].tolist() == plain["sha256"].tolist()
    assert names[8:] and all(n.startswith("alike") for n in names[8:])
    assert (queue["hardness_score"].diff().dropna() <= 0).all()


def test_queue_frame_columns_paths_and_top3(mined):
    _build(mined)
    frame = queue_frame(mined["conn"])
    assert list(frame.columns[:8]) == [
        "rank", "sha256", "path", "top_class", "top_score", "hardness_score", "reason",
        "group_size",
    ]  # fmt: skip
    assert frame["rank"].tolist() == sorted(frame["rank"])
    row = frame.iloc[0]
    assert row["path"].startswith(str(mined["pool"].resolve()))
    assert (mined["pool"] / row["path"]).is_file()
    assert row["top_class"] in CLASS_NAMES and row["class_2"] in CLASS_NAMES
    assert row["top_score"] >= row["score_2"] >= row["score_3"]
    assert len(queue_frame(mined["conn"], top=3)) == 3
    copy_row = frame[frame["path"].str.endswith(("cue1_0.png", "cue1_0_copy.png"))]
    assert copy_row["path"].iloc[0].endswith("cue1_0.png")  # the first registered path


def _run_cli(argv):
    args = parse_args(["queue", *argv])
    return args.func(args)


def test_queue_cli_prints_a_table_and_writes_csv(mined, tmp_path, capsys):
    queue = _build(mined)
    assert _run_cli(["--db", str(mined["db"]), "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = ["rank", "hardness", "class", "group_size", "reason", "sha256", "path"]
    assert lines[0].split() == header
    assert len(lines) == 5 and lines[4].startswith("paste a sha256 or a path into")
    assert lines[1].split()[0] == "1" and queue["class_name"].iloc[0] in lines[1]
    assert "cluster" in lines[1]
    frame = queue_frame(mined["conn"], top=3)
    for line, row in zip(lines[1:4], frame.itertuples()):
        assert line.split()[-2:] == [row.sha256[:12], row.path]
        assert line.split()[3] == str(row.group_size)
    out = tmp_path / "q.csv"
    assert _run_cli(["--db", str(mined["db"]), "--csv", str(out)]) == 0
    written = pd.read_csv(out)
    assert written["sha256"].tolist() == queue["sha256"].tolist()
    assert f"wrote {len(queue)} queue rows" in capsys.readouterr().out


def test_queue_cli_on_an_empty_or_missing_store(tmp_path, capsys):
    db = store.open_store(tmp_path / "empty.db")
    assert _run_cli(["--db", str(db)]) == 0
    assert "is empty; run `hardood mine`" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="nope.db"):
        _run_cli(["--db", str(tmp_path / "nope.db")])


def test_embeddings_of_every_scored_image_are_stored(mined):
    with store.transaction(mined["conn"]) as conn:
        n_scores = conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
        rows = conn.execute(
            "SELECT sha256 FROM embeddings WHERE embedder = ? ORDER BY row", (mined["embedder"],)
        ).fetchall()
        n_thumbs = conn.execute(
            "SELECT COUNT(*) FROM embeddings WHERE embedder = ?", (THUMB_EMBEDDER,)
        ).fetchone()[0]
    assert len(rows) == n_scores == n_thumbs == 9 + 3 + 1 + 5  # cues, noise, near dup, odd files
    vectors = np.fromfile(
        store.embeddings_dir(mined["conn"]) / f"{mined['embedder']}.f32", dtype="<f4"
    ).reshape(-1, mined["dim"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_what_queue_prints_pastes_into_similar(mined, capsys):
    _build(mined)
    assert _run_cli(["--db", str(mined["db"]), "--top", "1"]) == 0
    first = capsys.readouterr().out.splitlines()[1].split()
    sha_prefix, path = first[-2], first[-1]
    tables = []
    for like in (sha_prefix, path, Path(path).name):
        args = parse_args(["similar", "--db", str(mined["db"]), "--like", like, "--k", "3"])
        assert args.func(args) == 0
        tables.append(capsys.readouterr().out)
    assert tables[0] == tables[1] == tables[2] and len(tables[0].splitlines()) == 4
