import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from app.cli import parse_args
from curate import store
from curate.neighbours.similar import _sha256_of_file, expand_from_verdicts, find_similar
from curate.neighbours.vector_index import EmbeddingFile

CHECKPOINT = "c0ffee" * 10 + "c0ff"
EMBEDDER = f"classifier-{CHECKPOINT[:12]}"
CLASSES = ["train", "boat"]


def _on_arc(angles, dim=8):
    """Unit vectors at the given angles in one plane: cosine similarity = cos(angle difference)."""
    out = np.zeros((len(angles), dim), np.float32)
    out[:, 0], out[:, 1] = np.cos(angles), np.sin(angles)
    return out


def _make_store(tmp_path, angles):
    """A mined store: one real PNG per angle in pool/, scored, embedded on an arc.

    Image i has top_class i % 2 and hardness_score 0.9 - 0.01 * i.
    """
    folder = tmp_path / "pool"
    folder.mkdir()
    paths, shas = [], []
    for i in range(len(angles)):
        path = folder / f"img_{i:02d}.png"
        Image.new("RGB", (8, 8), (i * 9 % 256, 40, 200 - i)).save(path)
        paths.append(path)
        shas.append(_sha256_of_file(path))
    db = store.open_store(tmp_path / "pool.db")
    with store.connect(db) as conn, store.transaction(conn):
        run_id = store.start_run(conn, "mine", {}, checkpoint_sha256=CHECKPOINT)
        store.ensure_classes(conn, CLASSES)
        root_id = store.ensure_root(conn, folder)
        for i, (path, sha) in enumerate(zip(paths, shas)):
            conn.execute(
                "INSERT INTO images(sha256, width, height, n_bytes, status, added_run) "
                "VALUES (?, 8, 8, ?, 'ok', ?)",
                (sha, path.stat().st_size, run_id),
            )
            conn.execute(
                "INSERT INTO image_paths(root_id, relpath, sha256) VALUES (?, ?, ?)",
                (root_id, path.name, sha),
            )
            conn.execute(
                "INSERT INTO scores(sha256, checkpoint_sha256, run_id, probs, top_class, "
                "top_score, hardness_score) VALUES (?, ?, ?, ?, ?, 0.9, ?)",
                (sha, CHECKPOINT, run_id, store.encode_probs([0.5, 0.5]), i % 2, 0.9 - 0.01 * i),
            )
        EmbeddingFile(conn, EMBEDDER, dim=8).append(shas, _on_arc(angles))
    return db, shas, paths


def _verdict(conn, sha, verdict, created_at, undone=0):
    conn.execute(
        "INSERT INTO verdicts(sha256, annotator, verdict, created_at, undone) "
        "VALUES (?, 'ana', ?, ?, ?)",
        (sha, verdict, created_at, undone),
    )


@pytest.fixture
def arc_store(tmp_path):
    """Ten images at angles 0, 0.1, ..., 0.9: image i's neighbours are ordered by |i - j|."""
    db, shas, paths = _make_store(tmp_path, np.arange(10) * 0.1)
    with store.connect(db) as conn:
        yield conn, shas, paths


def test_find_similar_lists_the_planted_neighbours_in_order(arc_store):
    conn, shas, paths = arc_store
    _verdict(conn, shas[2], "no_foreground", 1.0)
    table = find_similar(conn, shas[0], k=3)
    assert list(table.columns) == [
        "rank", "sha256", "path", "similarity", "top_class", "class_name", "hardness_score",
        "verdict",
    ]  # fmt: skip
    assert table["rank"].tolist() == [1, 2, 3]
    assert table.sha256.tolist() == shas[1:4]
    np.testing.assert_allclose(table.similarity, np.cos([0.1, 0.2, 0.3]), atol=1e-6)
    assert table.path.tolist() == [str(p.resolve()) for p in paths[1:4]]
    assert table.top_class.tolist() == [1, 0, 1]
    assert table.class_name.tolist() == ["boat", "train", "boat"]
    np.testing.assert_allclose(table.hardness_score, [0.89, 0.88, 0.87])
    assert table.verdict.fillna("-").tolist() == ["-", "no_foreground", "-"]


def test_like_accepts_a_file_a_sha256_or_a_unique_prefix(arc_store):
    conn, shas, paths = arc_store
    by_sha = find_similar(conn, shas[5], k=4)
    assert set(by_sha.sha256) == {shas[4], shas[6], shas[3], shas[7]}
    pd.testing.assert_frame_equal(find_similar(conn, paths[5], k=4), by_sha)
    pd.testing.assert_frame_equal(find_similar(conn, shas[5][:10].upper(), k=4), by_sha)


def test_unknown_images_say_what_to_do(arc_store, tmp_path):
    conn, shas, _ = arc_store
    stranger = tmp_path / "new.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(stranger)
    with pytest.raises(ValueError, match=r"new.png .*not in .*run `hardood mine` first"):
        find_similar(conn, stranger)
    with pytest.raises(FileNotFoundError, match="no image file there, no stored path or file"):
        find_similar(conn, tmp_path / "missing.jpg")
    unknown = "ffffffff" if not shas[0].startswith("ffffffff") else "00000000"
    with pytest.raises(FileNotFoundError, match=f"{unknown}: .*not a sha256 prefix"):
        find_similar(conn, unknown)
    # an image known to the store but never embedded, sharing a 10-digit prefix with another
    twin = shas[0][:10] + "0" * 54 if shas[0][10] != "0" else shas[0][:10] + "1" * 54
    conn.execute("INSERT INTO images(sha256, status) VALUES (?, 'ok')", (twin,))
    with pytest.raises(ValueError, match="matches several images"):
        find_similar(conn, shas[0][:10])
    with pytest.raises(ValueError, match="no 'classifier-c0ffeec0ffee' embedding.*hardood mine"):
        find_similar(conn, twin)


def test_embedder_prefix_prefers_the_latest_checkpoint(arc_store):
    conn, shas, _ = arc_store
    newer = "beef" * 16
    # a second checkpoint whose embeddings order the neighbours the other way round
    run_id = store.start_run(conn, "mine", {}, checkpoint_sha256=newer)
    assert run_id == 2
    with store.transaction(conn):
        EmbeddingFile(conn, f"classifier-{newer[:12]}", dim=8).append(
            shas, _on_arc(np.r_[0.0, (10 - np.arange(1, 10)) * 0.1])
        )
    assert find_similar(conn, shas[0], k=1).sha256.tolist() == [shas[9]]
    old = find_similar(conn, shas[0], k=1, embedder=EMBEDDER)
    assert old.sha256.tolist() == [shas[1]]
    with pytest.raises(ValueError, match="no 'clip' embeddings.*stored embedders: classifier-"):
        find_similar(conn, shas[0], embedder="clip")


def test_cli_prints_the_table_and_writes_csv(arc_store, tmp_path, capsys):
    conn, shas, _ = arc_store
    out = tmp_path / "out" / "similar.csv"
    args = parse_args(["similar", "--db", str(store.db_path(conn)), "--like", shas[9], "--k", "2",
                              "--csv", str(out)])  # fmt: skip
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert shas[8][:12] in printed and shas[7][:12] in printed and "wrote 2 rows" in printed
    assert pd.read_csv(out).sha256.tolist() == [shas[8], shas[7]]


# ---- expansion from verdicts -----------------------------------------------------------------


@pytest.fixture
def two_seed_store(tmp_path):
    """Seed 0 at angle 0 with neighbours 1..6 at 0.1..0.6; seed 12 at angle 1.5 with neighbours
    7..11 at 1.4..1.0 (image 11 at 1.0 is nearer to seed 12, image 6 at 0.6 to seed 0)."""
    angles = np.r_[np.arange(7) * 0.1, 1.5 - np.arange(1, 6) * 0.1, 1.5]
    db, shas, _ = _make_store(tmp_path, angles)
    with store.connect(db) as conn:
        yield conn, shas


def test_expansion_skips_reviewed_queued_bad_and_duplicate_images(two_seed_store):
    conn, shas = two_seed_store
    _verdict(conn, shas[0], "no_foreground", 1.0)
    _verdict(conn, shas[1], "contains_foreground", 2.0)  # reviewed: skipped
    _verdict(conn, shas[2], "no_foreground", 3.0, undone=1)  # undone: open again, not a seed
    conn.execute(
        "INSERT INTO queue(sha256, rank, run_id, top_class, hardness_score, reason) "
        "VALUES (?, 1, 1, 0, 0.5, 'queued')",
        (shas[3],),
    )
    conn.execute("UPDATE images SET status = 'bad', bad_reason = 'truncated' "
                 "WHERE sha256 = ?", (shas[4],))  # fmt: skip
    conn.execute(
        "INSERT INTO dup_groups VALUES (?, ?, 2, 0.99), (?, ?, 2, 0.99)",
        (shas[5], shas[8], shas[8], shas[8]),  # image 5 is a copy of image 8
    )
    table = expand_from_verdicts(conn, k=2)
    assert table.sha256.tolist() == [shas[2], shas[6]]
    assert table.seed_sha256.tolist() == [shas[0], shas[0]]
    np.testing.assert_allclose(table.similarity, np.cos([0.2, 0.6]), atol=1e-6)
    assert table["rank"].tolist() == [1, 2]
    assert table.class_name.tolist() == ["train", "train"]


def test_each_neighbour_is_listed_once_with_its_nearest_seed(two_seed_store):
    conn, shas = two_seed_store
    _verdict(conn, shas[0], "no_foreground", 1.0)
    _verdict(conn, shas[12], "no_foreground", 2.0)
    table = expand_from_verdicts(conn, k=6)
    assert table.sha256.is_unique
    seed_of = dict(zip(table.sha256, table.seed_sha256))
    assert {seed_of[shas[i]] for i in range(1, 7)} == {shas[0]}
    assert {seed_of[shas[i]] for i in range(7, 12)} == {shas[12]}
    assert table.similarity.is_monotonic_decreasing


def test_a_later_verdict_replaces_the_seed_and_no_seed_means_no_rows(two_seed_store):
    conn, shas = two_seed_store
    _verdict(conn, shas[0], "no_foreground", 1.0)
    _verdict(conn, shas[0], "contains_foreground", 5.0)
    table = expand_from_verdicts(conn, k=3)
    assert table.empty and "seed_sha256" in table.columns


def test_like_accepts_a_stored_file_name_or_path_even_when_the_file_is_gone(arc_store):
    conn, shas, paths = arc_store
    by_sha = find_similar(conn, shas[5], k=4)
    paths[5].unlink()  # a stored name resolves through the store, not the disk
    pd.testing.assert_frame_equal(find_similar(conn, paths[5].name, k=4), by_sha)
    pd.testing.assert_frame_equal(find_similar(conn, str(paths[5].resolve()), k=4), by_sha)
    with pytest.raises(FileNotFoundError, match="no stored path or file name"):
        find_similar(conn, "elsewhere/" + paths[5].name)  # a path must match in full


def test_a_file_name_stored_for_two_images_asks_for_more(arc_store, tmp_path):
    conn, shas, paths = arc_store
    other = tmp_path / "other"
    other.mkdir()
    with store.transaction(conn):
        root_id = store.ensure_root(conn, other)
        conn.execute(
            "INSERT INTO image_paths(root_id, relpath, sha256) VALUES (?, ?, ?)",
            (root_id, paths[3].name, shas[4]),  # another image under the same file name
        )
    with pytest.raises(ValueError, match=f"'{paths[3].name}' names 2 different images") as err:
        find_similar(conn, paths[3].name)
    assert shas[3][:12] in str(err.value) and shas[4][:12] in str(err.value)
    # the full path still names one image
    assert find_similar(conn, str(paths[3].resolve()), k=1).sha256.tolist() == [shas[2]]


def _store_of_vectors(db_file, vectors):
    """A store whose images (keys 0, 1, ... as hex) have ``vectors`` as their embeddings."""
    shas = [f"{i:064x}" for i in range(len(vectors))]
    db = store.open_store(db_file)
    with store.connect(db) as conn, store.transaction(conn):
        conn.executemany(
            "INSERT INTO images(sha256, status) VALUES (?, 'ok')", [(s,) for s in shas]
        )
        EmbeddingFile(conn, EMBEDDER, dim=vectors.shape[1]).append(shas, vectors)
    return shas, db


def test_beyond_the_exact_limit_a_saved_compressed_index_answers_and_grows(tmp_path, monkeypatch):
    from curate.neighbours import similar as similar_module

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 32))
    vectors = centres[rng.integers(0, 40, 3000)] + 0.35 * rng.standard_normal((3000, 32))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    shas, db = _store_of_vectors(tmp_path / "big.db", vectors)
    with store.connect(db) as conn:
        monkeypatch.setattr(similar_module, "APPROXIMATE_FROM", 1000)
        exact = np.argsort(-(vectors @ vectors[7]))[1:21]
        table = find_similar(conn, shas[7], k=20, embedder=EMBEDDER)
        found = [int(s, 16) for s in table["sha256"]]
        assert len(set(found) & set(exact.tolist())) >= 18  # recall@20 >= 0.9
        np.testing.assert_allclose(table["similarity"], vectors[found] @ vectors[7], atol=1e-5)
        folder = store.embeddings_dir(conn)
        assert json.loads((folder / f"{EMBEDDER}.ivfpq.json").read_text())["rows"] == 3000
        # vectors appended later are added to the saved index on the next question
        copy = f"{3000:064x}"
        with store.transaction(conn):
            conn.execute("INSERT INTO images(sha256, status) VALUES (?, 'ok')", (copy,))
            EmbeddingFile(conn, EMBEDDER, dim=32).append([copy], vectors[7:8])
        table = find_similar(conn, shas[7], k=5, embedder=EMBEDDER)
        assert table["sha256"].iloc[0] == copy
        assert json.loads((folder / f"{EMBEDDER}.ivfpq.json").read_text())["rows"] == 3001


def test_the_compressed_index_probes_its_lists_with_a_deep_quantizer_search(tmp_path):
    """The HNSW coarse quantizer must search at least as deep as the lists it probes: with
    faiss's default depth (16) for 64 lists, one question of 20 at 10M images found none of its
    20 nearest."""
    import faiss

    from curate.neighbours import approximate_index

    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((5000, 16)).astype(np.float32)
    _, db = _store_of_vectors(tmp_path / "big.db", vectors)
    with store.connect(db) as conn:
        for _ in range(2):  # built, then read back from disk
            index = approximate_index.load_or_build(conn, EMBEDDER)
            ivf = faiss.extract_index_ivf(index)
            quantizer = faiss.downcast_index(ivf.quantizer)
            assert isinstance(quantizer, faiss.IndexHNSW)
            assert ivf.nprobe == approximate_index.NPROBE
            assert quantizer.hnsw.efSearch >= 2 * ivf.nprobe
