"""Annotators: sign-in and the one spelling of a name that every other call uses."""

from __future__ import annotations

import re
import sqlite3

from curate import store
from wood_train.errors import ConfigError, DataError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}")


def normalise_name(name: str) -> str:
    """An annotator name with runs of whitespace collapsed; raises ConfigError if unusable."""
    cleaned = " ".join(str(name).split())
    if not _NAME.fullmatch(cleaned):
        raise ConfigError(
            f"annotator name {name!r}: use 1-64 letters, digits, spaces or . _ @ - "
            "(starting with a letter or digit)"
        )
    return cleaned


def sign_in(conn: sqlite3.Connection, name: str) -> str:
    """Register an annotator (once) and return the normalised name to use in every other call."""
    name = normalise_name(name)
    with store.transaction(conn):
        conn.execute(
            "INSERT OR IGNORE INTO annotators(name, created_at) VALUES (?, ?)",
            (name, store.now_iso()),
        )
    return name


def require_signed_in(conn: sqlite3.Connection, annotator: str) -> None:
    """Raise DataError unless ``annotator`` has signed in."""
    if conn.execute("SELECT 1 FROM annotators WHERE name = ?", (annotator,)).fetchone() is None:
        raise DataError(f"annotator {annotator!r} has not signed in (call sign_in first)")
