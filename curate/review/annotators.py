"""Annotators and leads: sign-in and the one spelling of a name that every other call uses.

A name is an identity, not a display string: runs of whitespace collapse, the ends are trimmed and
letters are folded to lower case, so "ANA ", "ana" and "Ana" are one annotator. Names are 1-64
ASCII characters (letters, digits, space, ``. _ @ -``, starting with a letter or digit): the same
rule the manifest's ``annotators`` column is validated with, so no name can be a spreadsheet
formula.

A **lead** signs in with ``sign_in_lead``: a lead holds no leases and gives no votes, sees the whole
team (``curate.review.team``), adjudicates disagreements and marks gold items
(``curate.review.adjudication``, ``curate.review.gold``). The app checks the lead's password; the
store records who the leads are.
"""

from __future__ import annotations

import re
import sqlite3

from curate import store
from wood_train.errors import ConfigError, DataError

_NAME = re.compile(r"[a-z0-9][a-z0-9 ._@-]{0,63}")


def normalise_name(name: str) -> str:
    """The identity of an annotator name: whitespace collapsed, trimmed, lower case.

    Raises ConfigError when the name is unusable.

    >>> normalise_name("  ANA   b ")
    'ana b'
    """
    cleaned = " ".join(str(name).split()).lower()
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


def sign_in_lead(conn: sqlite3.Connection, name: str) -> str:
    """Register a lead (once) and return the normalised name to use in the lead's calls.

    The lead role and the annotator role are separate: a person who also annotates signs in as an
    annotator for that, and only those calls take leases or give votes.
    """
    name = normalise_name(name)
    with store.transaction(conn):
        conn.execute(
            "INSERT OR IGNORE INTO leads(name, created_at) VALUES (?, ?)", (name, store.now_iso())
        )
    return name


def is_lead(conn: sqlite3.Connection, name: str) -> bool:
    """Whether ``name`` (normalised) has signed in as a lead."""
    return conn.execute("SELECT 1 FROM leads WHERE name = ?", (name,)).fetchone() is not None


def require_signed_in(conn: sqlite3.Connection, annotator: str) -> None:
    """Raise DataError unless ``annotator`` has signed in as an annotator (a lead who has not
    also signed in as an annotator holds no leases and gives no votes)."""
    if conn.execute("SELECT 1 FROM annotators WHERE name = ?", (annotator,)).fetchone() is None:
        if is_lead(conn, annotator):
            raise DataError(f"{annotator!r} is signed in as a lead: a lead holds no leases")
        raise DataError(f"annotator {annotator!r} has not signed in (call sign_in first)")


def signed_in(conn: sqlite3.Connection, name: str) -> str:
    """The normalised ``name``, once it is known to have signed in as an annotator."""
    name = normalise_name(name)
    require_signed_in(conn, name)
    return name


def require_lead(conn: sqlite3.Connection, lead: str) -> str:
    """The normalised ``lead``; DataError unless that name has signed in as a lead."""
    lead = normalise_name(lead)
    if not is_lead(conn, lead):
        raise DataError(f"{lead!r} is not a lead (call sign_in_lead first)")
    return lead
