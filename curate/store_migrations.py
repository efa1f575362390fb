"""The store's migrations after version 1, each a function named for what it does.

``curate.store.MIGRATIONS`` lists them in order; a migration runs inside the write lock of
``open_store`` and must be safe to run on a store that already has part of it (``IF NOT EXISTS``,
columns checked before they are added).
"""

from __future__ import annotations

import sqlite3


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run each statement of ``script`` inside the caller's transaction (``executescript`` would
    commit first); triggers, whose bodies hold ``;``, are split where SQLite says they end."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement in a migration: {statement[:60]!r}")


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


# What the annotator saw when a verdict was given, copied from the queue row and its scores at
# that moment, so verdicts outlive the queue that showed them (a re-mine replaces the queue).
_VERDICT_FACTS = {
    "queue_run_id": "INTEGER",  # the run that built the queue (``runs``): the review round
    "queue_rank": "INTEGER",
    "checkpoint_sha256": "TEXT",  # the classifier that ranked the item
    "top_class": "INTEGER",
    "top_score": "REAL",
    "hardness_score": "REAL",
    "reason": "TEXT",
    "gold_check": "INTEGER NOT NULL DEFAULT 0",  # a check on a gold item: never a vote
    "replaces": "INTEGER",  # the verdict this one changed (that one is marked undone)
}


def add_verdict_facts(conn: sqlite3.Connection) -> None:
    """Verdicts keep the queue facts and scores they were given on; older ones are backfilled
    from the queue the store holds now (or from the image's latest scores, without a rank)."""
    present = _columns(conn, "verdicts")
    for column, kind in _VERDICT_FACTS.items():
        if column not in present:
            conn.execute(f"ALTER TABLE verdicts ADD COLUMN {column} {kind}")
    conn.execute(
        "UPDATE verdicts SET (queue_run_id, queue_rank, checkpoint_sha256, top_class, top_score, "
        "hardness_score, reason) = (SELECT q.run_id, q.rank, s.checkpoint_sha256, q.top_class, "
        "s.top_score, q.hardness_score, q.reason FROM queue q JOIN runs r ON r.run_id = q.run_id "
        "LEFT JOIN scores s ON s.sha256 = q.sha256 AND s.checkpoint_sha256 = r.checkpoint_sha256 "
        "WHERE q.sha256 = verdicts.sha256) "
        "WHERE queue_run_id IS NULL AND sha256 IN (SELECT sha256 FROM queue)"
    )
    conn.execute(
        "UPDATE verdicts SET (checkpoint_sha256, top_class, top_score, hardness_score) = "
        "(SELECT s.checkpoint_sha256, s.top_class, s.top_score, s.hardness_score FROM scores s "
        "WHERE s.sha256 = verdicts.sha256 ORDER BY s.run_id DESC LIMIT 1) "
        "WHERE checkpoint_sha256 IS NULL"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS verdicts_round ON verdicts(queue_run_id)")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS verdicts_item_annotator ON verdicts(sha256, annotator)"
    )


_REVIEW_ITEMS = """
CREATE TABLE IF NOT EXISTS review_items(
    sha256 TEXT PRIMARY KEY, rank INTEGER NOT NULL, live_votes INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS review_items_open ON review_items(live_votes, rank);
CREATE INDEX IF NOT EXISTS leases_annotator ON leases(annotator, expires_at);
CREATE INDEX IF NOT EXISTS leases_expires ON leases(expires_at);
CREATE TRIGGER IF NOT EXISTS review_items_queued AFTER INSERT ON queue BEGIN
    INSERT OR REPLACE INTO review_items(sha256, rank, live_votes) VALUES (NEW.sha256, NEW.rank,
        (SELECT COUNT(*) FROM verdicts v
         WHERE v.sha256 = NEW.sha256 AND v.undone = 0 AND v.gold_check = 0));
END;
CREATE TRIGGER IF NOT EXISTS review_items_unqueued AFTER DELETE ON queue BEGIN
    DELETE FROM review_items WHERE sha256 = OLD.sha256;
END;
CREATE TRIGGER IF NOT EXISTS review_items_reranked AFTER UPDATE OF rank ON queue BEGIN
    UPDATE review_items SET rank = NEW.rank WHERE sha256 = NEW.sha256;
END;
CREATE TRIGGER IF NOT EXISTS review_items_vote_added AFTER INSERT ON verdicts
WHEN NEW.undone = 0 AND NEW.gold_check = 0 BEGIN
    UPDATE review_items SET live_votes = live_votes + 1 WHERE sha256 = NEW.sha256;
END;
CREATE TRIGGER IF NOT EXISTS review_items_vote_undone AFTER UPDATE OF undone ON verdicts
WHEN NEW.gold_check = 0 AND OLD.undone != NEW.undone BEGIN
    UPDATE review_items SET live_votes = live_votes + (CASE WHEN NEW.undone = 0 THEN 1 ELSE -1 END)
    WHERE sha256 = NEW.sha256;
END;
CREATE TRIGGER IF NOT EXISTS review_items_vote_deleted AFTER DELETE ON verdicts
WHEN OLD.undone = 0 AND OLD.gold_check = 0 BEGIN
    UPDATE review_items SET live_votes = live_votes - 1 WHERE sha256 = OLD.sha256;
END;
"""


def add_review_items(conn: sqlite3.Connection) -> None:
    """``review_items``: each queue item's rank and live vote count, kept by triggers, indexed by
    (live_votes, rank), so the next open items are an index range instead of a queue scan."""
    _run_script(conn, _REVIEW_ITEMS)
    conn.execute(
        "INSERT OR REPLACE INTO review_items(sha256, rank, live_votes) SELECT q.sha256, q.rank, "
        "(SELECT COUNT(*) FROM verdicts v WHERE v.sha256 = q.sha256 AND v.undone = 0 "
        "AND v.gold_check = 0) FROM queue q"
    )


_LEADS_AND_GOLD = """
CREATE TABLE IF NOT EXISTS leads(name TEXT PRIMARY KEY, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS gold(
    sha256 TEXT PRIMARY KEY,
    verdict TEXT NOT NULL CHECK (verdict IN
        ('no_foreground', 'contains_foreground', 'unsure', 'bad_image')),
    source TEXT NOT NULL CHECK (source IN ('lead', 'truth')),
    marked_by TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS gold_checks(
    sha256 TEXT NOT NULL, annotator TEXT NOT NULL, leased_at REAL NOT NULL,
    expires_at REAL NOT NULL, PRIMARY KEY(sha256, annotator));
CREATE INDEX IF NOT EXISTS gold_checks_annotator ON gold_checks(annotator, expires_at);
"""


def add_leads_and_gold(conn: sqlite3.Connection) -> None:
    """``leads`` (the lead role: no leases, sees everything), ``gold`` (items whose right answer
    is known) and ``gold_checks`` (gold items shown to an annotator to measure them)."""
    _run_script(conn, _LEADS_AND_GOLD)


def fold_annotator_names(conn: sqlite3.Connection) -> None:
    """One spelling per annotator: "ANA" and "ana" become "ana" (names are ASCII by rule, so
    SQLite's lower() and Python's str.lower() agree)."""
    conn.execute(  # keep the first sign-in time of every spelling
        "INSERT INTO annotators(name, created_at) "
        "SELECT lower(name), MIN(created_at) FROM annotators WHERE true GROUP BY lower(name) "
        "HAVING MAX(name != lower(name)) "
        "ON CONFLICT(name) DO UPDATE SET created_at = excluded.created_at"
    )
    conn.execute("DELETE FROM annotators WHERE name != lower(name)")
    conn.execute(
        "UPDATE verdicts SET annotator = lower(annotator) WHERE annotator != lower(annotator)"
    )
    conn.execute("DELETE FROM leases WHERE annotator != lower(annotator)")  # leases are short-lived


def index_embedding_rows(conn: sqlite3.Connection) -> None:
    """Look up an embedder's rows by file row: ``hardood similar`` turns the rows its index
    returns into image keys, and without this index each question scanned every embedding
    (2 s at 10M images)."""
    conn.execute("CREATE INDEX IF NOT EXISTS embeddings_row ON embeddings(embedder, row)")
