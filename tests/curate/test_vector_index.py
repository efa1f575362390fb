import os
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from curate import store
from curate.neighbours.vector_index import (
    EmbeddingFile,
    build_index,
    forget_missing_vectors,
    gpu_available,
    ivf_list_count,
)
from curate.score.clip import l2_normalize
from wood_train.errors import DataError


def _unit(n, dim, seed=0):
    return l2_normalize(np.random.default_rng(seed).standard_normal((n, dim)))


@pytest.fixture
def db(tmp_path):
    return store.open_store(tmp_path / "pool.db")


@pytest.fixture
def conn(db):
    with store.connect(db) as connection:
        yield connection


def _shas(*names):
    return [name * (64 // len(name)) for name in names]


# ---- build_index -----------------------------------------------------------------------------


def test_flat_index_finds_planted_neighbour():
    vectors = _unit(500, 16)
    query = l2_normalize(vectors[123] + 0.05 * _unit(1, 16, seed=1)[0])[None]
    index = build_index(vectors, use_gpu=False)
    assert isinstance(index, faiss.IndexFlat) and index.ntotal == 500
    sims, rows = index.search(query, 3)
    assert rows[0, 0] == 123
    assert sims[0, 0] == pytest.approx(float(query[0] @ vectors[123]), abs=1e-5)


def test_l2_metric_ranks_by_distance():
    vectors = np.array([[0.0, 0.0], [3.0, 0.0], [1.0, 1.0]], np.float32)
    index = build_index(vectors, metric="l2", use_gpu=False)
    dist, rows = index.search(np.array([[0.9, 0.9]], np.float32), 3)
    assert rows[0].tolist() == [2, 0, 1]
    assert dist[0, 0] == pytest.approx(0.02, abs=1e-5)  # squared distance


def test_ivf_index_beyond_exact_limit_is_deterministic_and_finds_neighbours():
    # enough rows that each IVF list gets its 39 training points (no faiss warning)
    vectors = _unit(25_000, 16)
    planted = [5, 7_777, 24_000]
    queries = l2_normalize(vectors[planted] + 0.02 * _unit(3, 16, seed=2))
    first = build_index(vectors, exact_limit=1_000, use_gpu=False, nprobe=8)
    assert isinstance(first, faiss.IndexIVFFlat)
    assert first.nlist == ivf_list_count(25_000) == 632
    assert first.nprobe == 8 and first.ntotal == 25_000
    rows = first.search(queries, 1)[1][:, 0]
    assert rows.tolist() == planted
    second = build_index(vectors, exact_limit=1_000, use_gpu=False, nprobe=8)
    assert np.array_equal(second.search(vectors[:50], 5)[1], first.search(vectors[:50], 5)[1])


def test_build_index_rejects_bad_arguments():
    vectors = _unit(10, 4)
    with pytest.raises(ValueError, match="metric"):
        build_index(vectors, metric="cosine")
    with pytest.raises(ValueError, match="2-D"):
        build_index(vectors[0])
    if not gpu_available():
        with pytest.raises(ValueError, match="GPU"):
            build_index(vectors, use_gpu=True)


# ---- EmbeddingFile ---------------------------------------------------------------------------


def test_append_then_load_in_any_order(db, conn):
    keys = _shas("a", "b", "c")
    vectors = _unit(3, 8)
    file = EmbeddingFile(conn, "classifier-abc", dim=8)
    with store.transaction(conn):
        assert file.append(keys, vectors) == 3
    assert file.path == db.parent / "pool.embeddings" / "classifier-abc.f32"
    assert file.path.stat().st_size == 3 * 8 * 4
    np.testing.assert_array_equal(file.load([keys[2], keys[0]]), vectors[[2, 0]])
    rows = dict(conn.execute("SELECT sha256, row FROM embeddings").fetchall())
    assert rows == {keys[0]: 0, keys[1]: 1, keys[2]: 2}


def test_reappending_known_images_is_a_no_op(conn):
    keys = _shas("a", "b")
    file = EmbeddingFile(conn, "clip", dim=4)
    vectors = _unit(2, 4)
    with store.transaction(conn):
        file.append(keys, vectors)
    new_key = _shas("d")[0]
    with store.transaction(conn):
        # a known key with other values, a new key twice: only the first copy of the new one lands
        added = file.append(
            [keys[1], new_key, new_key], np.stack([vectors[0], vectors[1], vectors[0]])
        )
    assert added == 1 and file.n_rows == 3
    np.testing.assert_array_equal(file.load(keys + [new_key]), vectors[[0, 1, 1]])


def test_load_all_is_a_memory_map_in_row_order(conn):
    keys = _shas("e", "f", "a")
    vectors = _unit(3, 6)
    file = EmbeddingFile(conn, "clip", dim=6)
    with store.transaction(conn):
        file.append(keys, vectors)
    got_keys, got = file.load_all()
    assert got_keys == keys
    assert isinstance(got, np.memmap)
    np.testing.assert_array_equal(np.asarray(got), vectors)


def test_failed_transaction_leaves_no_rows_pointing_into_the_file(conn):
    file = EmbeddingFile(conn, "clip", dim=4)
    lost, kept = _unit(2, 4, seed=3), _unit(2, 4, seed=4)
    with pytest.raises(RuntimeError):
        with store.transaction(conn):
            file.append(_shas("a", "b"), lost)
            raise RuntimeError("killed after writing the vectors")
    assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 0
    with open(file.path, "ab") as f:
        f.write(b"\x00\x01\x02")  # and a row half-written when the process died
    with store.transaction(conn):
        assert file.append(_shas("a", "b"), kept) == 2
    keys, got = file.load_all()
    assert file.path.stat().st_size == 4 * 4 * 4  # two orphan rows, then the two recorded ones
    np.testing.assert_array_equal(np.asarray(got), kept)
    np.testing.assert_array_equal(file.load(_shas("b")), kept[1:])


def test_dimension_is_recorded_and_checked(conn):
    file = EmbeddingFile(conn, "clip", dim=4)
    with store.transaction(conn):
        file.append(_shas("a"), _unit(1, 4))
    assert EmbeddingFile.open(conn, "clip").dim == 4
    with pytest.raises(ValueError, match=r"clip\.json.*dimension 4, not 8"):
        EmbeddingFile(conn, "clip", dim=8)
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        file.append(_shas("b"), _unit(1, 5))
    with pytest.raises(FileNotFoundError, match="no 'other' embeddings.*hardood mine"):
        EmbeddingFile.open(conn, "other")


def test_missing_and_damaged_rows_are_clear_errors(conn):
    file = EmbeddingFile(conn, "clip", dim=4)
    with store.transaction(conn):
        file.append(_shas("a", "b"), _unit(2, 4))
    with pytest.raises(DataError, match="no 'clip' embedding.*hardood mine"):
        file.load(_shas("a", "c"))
    with open(file.path, "r+b") as f:
        f.truncate(4 * 4)  # the file lost its second row
    with pytest.raises(ValueError, match="clip.f32.*row 1.*holds 1 rows.*same checkpoint"):
        file.load(_shas("b"))
    with pytest.raises(ValueError, match="letters, digits"):
        EmbeddingFile(conn, "../escape", dim=4)


def test_a_store_copied_without_its_folder_says_what_is_missing(tmp_path):
    original = store.open_store(tmp_path / "a" / "pool.db")
    with store.connect(original) as conn:
        with store.transaction(conn):
            EmbeddingFile(conn, "clip", dim=4).append(_shas("a", "b"), _unit(2, 4))
    copy = tmp_path / "b" / "pool.db"
    copy.parent.mkdir()
    shutil.copy(original, copy)  # the .db alone (its WAL was checkpointed at close)
    with store.connect(copy) as conn:
        folder = tmp_path / "b" / "pool.embeddings"
        hint = (
            f"its embeddings folder {folder} is missing (a store is its .db file plus that folder "
            "beside it); copy the folder next to the .db, or re-run `hardood mine` with the same "
            "checkpoint to re-embed the images"
        )
        with pytest.raises(FileNotFoundError) as opened:
            EmbeddingFile.open(conn, "clip")
        assert str(opened.value) == f"{copy}: {hint}"
        with pytest.raises(FileNotFoundError) as loaded:
            EmbeddingFile(conn, "clip", dim=4).load(_shas("a"))
        assert str(loaded.value) == f"{copy}: {hint}"
        # what `hardood mine` does first: forget the rows, so scoring embeds the images again
        assert forget_missing_vectors(conn) == {"clip": 2}
        assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 0
        assert forget_missing_vectors(conn) == {}


def test_forget_missing_vectors_keeps_the_rows_a_truncated_file_still_holds(conn):
    file = EmbeddingFile(conn, "clip", dim=4)
    vectors = _unit(3, 4)
    with store.transaction(conn):
        file.append(_shas("a", "b", "c"), vectors)
    with open(file.path, "r+b") as f:
        f.truncate(4 * 4 + 5)  # one whole row and part of the next
    assert forget_missing_vectors(conn) == {"clip": 2}
    keys, got = file.load_all()
    assert keys == _shas("a")
    np.testing.assert_array_equal(np.asarray(got), vectors[:1])


def test_a_scored_batch_forces_every_vector_file_to_disk_before_its_rows_commit(conn, monkeypatch):
    """write_scored syncs its files together (sync_files), still before the commit that makes the
    table rows point at the new vectors."""
    from curate.score.scored_batch import ScoredBatch, ScoreTarget, write_scored

    events = []
    real_fsync = os.fsync

    def fsync(fd):
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    shas = _shas("a", "b")
    with store.transaction(conn):
        conn.executemany(
            "INSERT INTO images(sha256, n_bytes, status) VALUES (?, 1, 'ok')", [(s,) for s in shas]
        )
    run_id = store.start_run(conn, "mine", {}, "c" * 64)
    batch = ScoredBatch(shas, [(8, 8)] * 2, np.full((2, 3), 0.5, np.float32), np.zeros(2, int),
                        np.ones(2), np.ones(2), np.ones(2), np.zeros((2, 4, 4), np.uint8),
                        _unit(2, 8), _unit(2, 108), np.zeros((2, 768), np.uint8))  # fmt: skip
    conn.set_trace_callback(lambda sql: events.append(("sql", sql.split()[0])) if sql else None)
    write_scored(conn, ScoreTarget("c" * 64, "classifier-c"), run_id, batch)
    conn.set_trace_callback(None)
    commit = events.index(("sql", "COMMIT"))
    synced = {name for kind, name in events[:commit] if kind == "fsync"}
    assert synced == {"classifier-c.f32", "thumb6.f16", "confirm16.u8"}
    assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 6
