"""The curation store: schema creation, migration, newer-version refusal, transactions, runs."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from curate import store

V1_TABLES = {
    "meta", "runs", "roots", "images", "image_paths", "scores", "embeddings", "dup_groups",
    "queue", "annotators", "leases", "verdicts",
}  # fmt: skip
REVIEW_TABLES = {"review_items", "leads", "gold", "gold_checks"}


def _tables(db):
    with store.connect(db) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {r["name"] for r in rows} - {"sqlite_sequence"}


def test_open_store_creates_every_table_in_wal_mode(tmp_path):
    db = store.open_store(tmp_path / "sub" / "c.db")
    assert db.is_file() and db.is_absolute()
    assert _tables(db) == V1_TABLES | REVIEW_TABLES
    with store.connect(db) as conn:
        assert store.schema_version(conn) == store.STORE_SCHEMA_VERSION == len(store.MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
        names = {r["name"] for r in conn.execute("PRAGMA table_info(scores)")}
    assert {"hardness_score", "energy_score", "clip_fg_score", "heatmap", "probs"} <= names
    # opening again is a no-op that keeps data
    with store.connect(db) as conn:
        store.set_meta(conn, "note", "kept")
    store.open_store(db)
    with store.connect(db) as conn:
        assert store.get_meta(conn, "note") == "kept"


def _names(db):
    with store.connect(db) as conn:
        return [r["name"] for r in conn.execute("SELECT name FROM annotators ORDER BY name")]


def test_transaction_commits_on_success_and_rolls_back_on_error(tmp_path):
    db = store.open_store(tmp_path / "c.db")
    with store.connect(db) as conn:
        assert not conn.in_transaction  # connect opens no transaction
        with store.transaction(conn):
            conn.execute("INSERT INTO annotators VALUES ('ana', ?)", (store.now_iso(),))
            assert conn.in_transaction
        assert not conn.in_transaction
        with pytest.raises(RuntimeError):
            with store.transaction(conn, immediate=True):
                conn.execute("INSERT INTO annotators VALUES ('bo', ?)", (store.now_iso(),))
                raise RuntimeError("boom")
        assert not conn.in_transaction
        # the connection stays usable after a rollback
        with store.transaction(conn):
            conn.execute("INSERT INTO annotators VALUES ('cy', ?)", (store.now_iso(),))
    assert _names(db) == ["ana", "cy"]


def test_a_nested_transaction_is_a_savepoint(tmp_path):
    db = store.open_store(tmp_path / "c.db")
    with store.connect(db) as conn:
        with store.transaction(conn, immediate=True):
            conn.execute("INSERT INTO annotators VALUES ('ana', ?)", (store.now_iso(),))
            with pytest.raises(RuntimeError):
                with store.transaction(conn):
                    conn.execute("INSERT INTO annotators VALUES ('bo', ?)", (store.now_iso(),))
                    raise RuntimeError("boom")
            with store.transaction(conn):  # the inner commit waits for the outer one
                conn.execute("INSERT INTO annotators VALUES ('cy', ?)", (store.now_iso(),))
            assert _names(db) == []  # another connection sees nothing before the outer COMMIT
        assert not conn.in_transaction
    assert _names(db) == ["ana", "cy"]


def test_a_read_transaction_is_one_snapshot(tmp_path):
    db = store.open_store(tmp_path / "c.db")
    with store.connect(db) as reader, store.connect(db) as writer:
        with store.transaction(reader):
            before = reader.execute("SELECT COUNT(*) FROM annotators").fetchone()[0]
            with store.transaction(writer):
                writer.execute("INSERT INTO annotators VALUES ('ana', ?)", (store.now_iso(),))
            during = reader.execute("SELECT COUNT(*) FROM annotators").fetchone()[0]
        after = reader.execute("SELECT COUNT(*) FROM annotators").fetchone()[0]
    assert (before, during, after) == (0, 0, 1)


def test_connect_closes_its_connection(tmp_path):
    db = store.open_store(tmp_path / "c.db")
    with store.connect(db) as conn:
        assert store.db_path(conn) == db
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        conn.execute("SELECT 1")


def test_foreign_keys_are_enforced(tmp_path):
    db = store.open_store(tmp_path / "c.db")
    with pytest.raises(sqlite3.IntegrityError):
        with store.connect(db) as conn:
            conn.execute(
                "INSERT INTO image_paths(root_id, relpath, sha256) VALUES (99, 'a.jpg', 'nope')"
            )


def test_verdict_check_constraint(tmp_path):
    db = store.open_store(tmp_path / "c.db")
    with pytest.raises(sqlite3.IntegrityError):
        with store.connect(db) as conn:
            conn.execute(
                "INSERT INTO verdicts(sha256, annotator, verdict, created_at) "
                "VALUES ('x', 'ana', 'maybe', 0)"
            )


def test_migration_runs_pending_steps_in_order_and_keeps_data(tmp_path, monkeypatch):
    db = store.open_store(tmp_path / "c.db")
    with store.connect(db) as conn:
        conn.execute("INSERT INTO annotators VALUES ('ana', ?)", (store.now_iso(),))

    def add_column(conn):
        conn.execute("ALTER TABLE annotators ADD COLUMN team TEXT DEFAULT 'core'")

    latest = store.STORE_SCHEMA_VERSION
    monkeypatch.setattr(store, "MIGRATIONS", [*store.MIGRATIONS, add_column])
    monkeypatch.setattr(store, "STORE_SCHEMA_VERSION", latest + 1)
    store.open_store(db)
    with store.connect(db) as conn:
        assert store.schema_version(conn) == latest + 1
        row = conn.execute("SELECT name, team FROM annotators").fetchone()
    assert (row["name"], row["team"]) == ("ana", "core")


def test_failed_migration_leaves_the_store_at_its_old_version(tmp_path, monkeypatch):
    db = store.open_store(tmp_path / "c.db")

    def broken(conn):
        conn.execute("CREATE TABLE half_done(x INTEGER)")
        raise sqlite3.OperationalError("disk full")

    latest = store.STORE_SCHEMA_VERSION
    monkeypatch.setattr(store, "MIGRATIONS", [*store.MIGRATIONS, broken])
    monkeypatch.setattr(store, "STORE_SCHEMA_VERSION", latest + 1)
    with pytest.raises(sqlite3.OperationalError):
        store.open_store(db)
    with store.connect(db) as conn:
        assert store.schema_version(conn) == latest
    assert "half_done" not in _tables(db)


def test_newer_schema_is_refused_with_a_clear_error(tmp_path):
    db = store.open_store(tmp_path / "c.db")
    with store.connect(db) as conn:
        store.set_meta(conn, "schema_version", str(store.STORE_SCHEMA_VERSION + 1))
    newer = store.STORE_SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match=rf"c\.db.*schema version {newer}.*upgrade hardood"):
        store.open_store(db)


def test_not_a_database_is_a_clear_error(tmp_path):
    bogus = tmp_path / "notes.db"
    bogus.write_text("this is a text file, not SQLite " * 100)
    with pytest.raises(ValueError, match="notes.db.*not a usable curation database"):
        store.open_store(bogus)


def test_connect_to_missing_store_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.db"):
        with store.connect(tmp_path / "missing.db"):
            pass


def test_classes_are_set_once_and_checked(tmp_path):
    db = store.open_store(tmp_path / "c.db")
    with store.connect(db) as conn:
        assert store.get_classes(conn) is None
        store.ensure_classes(conn, ["train", "boat"])
        store.ensure_classes(conn, ["train", "boat"])
        with pytest.raises(ValueError, match=r"\['train', 'bird'\].*\['train', 'boat'\]"):
            store.ensure_classes(conn, ["train", "bird"], source="ck.pt")
        assert store.get_classes(conn) == ["train", "boat"]


def test_runs_record_config_status_and_counts(tmp_path):
    db = store.open_store(tmp_path / "c.db")
    with store.connect(db) as conn:
        run_id = store.start_run(conn, "mine", {"batch_size": 8}, checkpoint_sha256="abc")
        row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        assert row["status"] == "running" and row["ended_at"] is None
        assert row["checkpoint_sha256"] == "abc" and '"batch_size": 8' in row["config_json"]
        store.finish_run(conn, run_id, "done", {"scored": 3})
        row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        assert row["status"] == "done" and row["ended_at"] >= row["started_at"]
        assert row["counts_json"] == '{"scored": 3}'
        with pytest.raises(ValueError, match="run status"):
            store.finish_run(conn, run_id, "finished")


def test_roots_are_absolute_and_unique(tmp_path):
    db = store.open_store(tmp_path / "c.db")
    with store.connect(db) as conn:
        a = store.ensure_root(conn, tmp_path / "pool")
        b = store.ensure_root(conn, tmp_path / "pool" / ".." / "pool")
        c = store.ensure_root(conn, tmp_path / "other")
        paths = [r["path"] for r in conn.execute("SELECT path FROM roots ORDER BY root_id")]
    assert a == b != c
    assert paths == [str((tmp_path / "pool").resolve()), str((tmp_path / "other").resolve())]


def test_blob_round_trips():
    probs = np.array([0.1, 0.93, 0.0], dtype=np.float64)
    blob = store.encode_probs(probs)
    assert len(blob) == 12 and blob[:4] == np.float32(0.1).tobytes()
    np.testing.assert_array_equal(store.decode_probs(blob), probs.astype(np.float32))
    heat = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_array_equal(store.decode_heatmap(store.encode_heatmap(heat), 4), heat)
    with pytest.raises(ValueError, match="square uint8"):
        store.encode_heatmap(np.zeros((4, 3), dtype=np.uint8))


def test_embeddings_dir_sits_beside_the_store(tmp_path):
    db = store.open_store(tmp_path / "curation.db")
    with store.connect(db) as conn:
        assert store.embeddings_dir(conn) == db.parent / "curation.embeddings"


def test_delete_store_removes_the_file_its_journal_and_its_folder(tmp_path):
    db = store.open_store(tmp_path / "curation.db")
    with store.connect(db) as conn:
        folder = store.embeddings_dir(conn)
        store.set_meta(conn, "note", "x")  # a write leaves -wal/-shm beside the file
        folder.mkdir()
        (folder / "thumb6.f32").write_bytes(b"\0" * 8)
    store.delete_store(db)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_store_from_before_the_review_migrations_is_upgraded(tmp_path, monkeypatch):
    """A version 2 store (written before the review migrations): its verdicts get the facts of the queue it
    holds (or their latest scores), the open-items index is filled, and "ANA" and "ana" become
    one annotator."""
    db = tmp_path / "c.db"
    monkeypatch.setattr(store, "MIGRATIONS", store.MIGRATIONS[:2])
    monkeypatch.setattr(store, "STORE_SCHEMA_VERSION", 2)
    store.open_store(db)
    with store.connect(db) as conn, store.transaction(conn):
        conn.execute(
            "INSERT INTO runs(run_id, command, config_json, checkpoint_sha256, started_at, status) "
            "VALUES (1, 'mine', '{}', 'ck1', 'now', 'done')"
        )
        for sha, score in (("a" * 64, 0.9), ("b" * 64, 0.8)):
            conn.execute("INSERT INTO images(sha256, status) VALUES (?, 'ok')", (sha,))
            conn.execute(
                "INSERT INTO scores(sha256, checkpoint_sha256, run_id, probs, top_class, "
                "top_score, hardness_score) VALUES (?, 'ck1', 1, x'00', 1, ?, ?)",
                (sha, score, score),
            )
        conn.execute(
            "INSERT INTO queue(sha256, rank, run_id, top_class, hardness_score, reason) "
            "VALUES (?, 1, 1, 1, 0.9, 'rails')",
            ("a" * 64,),
        )
        conn.execute("INSERT INTO annotators VALUES ('ANA', '2024-01-01')")
        conn.execute("INSERT INTO annotators VALUES ('ana', '2024-02-01')")
        for sha, name in (("a" * 64, "ANA"), ("b" * 64, "ana")):
            conn.execute(
                "INSERT INTO verdicts(sha256, annotator, verdict, created_at) "
                "VALUES (?, ?, 'no_foreground', 0)",
                (sha, name),
            )
    monkeypatch.undo()
    store.open_store(db)
    with store.connect(db) as conn:
        assert store.schema_version(conn) == store.STORE_SCHEMA_VERSION
        rows = conn.execute(
            "SELECT sha256, annotator, queue_run_id, queue_rank, checkpoint_sha256, top_score, "
            "reason FROM verdicts ORDER BY sha256"
        ).fetchall()
        assert [tuple(r) for r in rows] == [
            ("a" * 64, "ana", 1, 1, "ck1", 0.9, "rails"),  # still queued: the queue's facts
            ("b" * 64, "ana", None, None, "ck1", 0.8, None),  # gone: its latest scores
        ]
        assert [tuple(r) for r in conn.execute("SELECT name, created_at FROM annotators")] == [
            ("ana", "2024-01-01")
        ]
        index = conn.execute("SELECT sha256, live_votes FROM review_items").fetchall()
        assert [tuple(r) for r in index] == [("a" * 64, 1)]


def test_embedding_rows_are_looked_up_by_index_also_in_an_upgraded_store(tmp_path, monkeypatch):
    """`hardood similar` maps the file rows its index returns to keys; at 10M images a scan of
    the embeddings table per question took 2 s. A store from before the index gets it."""
    query = (
        "EXPLAIN QUERY PLAN SELECT row, sha256 FROM embeddings WHERE embedder = ? AND row IN (3, 7)"
    )
    old = tmp_path / "old.db"
    monkeypatch.setattr(store, "MIGRATIONS", store.MIGRATIONS[:-1])
    monkeypatch.setattr(store, "STORE_SCHEMA_VERSION", len(store.MIGRATIONS))
    store.open_store(old)
    with store.connect(old) as conn:
        plan = " ".join(str(tuple(r)) for r in conn.execute(query, ("clip",)))
        assert "embeddings_row" not in plan
    monkeypatch.undo()
    for db in (old, tmp_path / "new.db"):
        store.open_store(db)
        with store.connect(db) as conn:
            plan = " ".join(str(tuple(r)) for r in conn.execute(query, ("clip",)))
            assert (
                "USING COVERING INDEX embeddings_row" in plan
                or "USING INDEX embeddings_row" in plan
            ), plan
