"""This session's last submissions (a grid page, or one image of the single view), newest last.

``z`` undoes the newest one as a whole: every verdict of it is marked undone in the store and its
images come back to the annotator, shown as they were submitted. The History view lists the
last few submissions so that a verdict can be changed later; a change is a new verdict, and the
old one is kept, marked undone.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

import streamlit as st

from curate.review import verdicts

MAX_ENTRIES = 8


@dataclass(frozen=True)
class Submission:
    shas: tuple[str, ...]
    verdicts: tuple[str, ...]
    at: float  # unix seconds


def entries() -> list[Submission]:
    return st.session_state.setdefault("history", [])


def push(shas: list[str], verdicts: list[str]) -> None:
    """Remember a submission that was recorded."""
    log = entries()
    log.append(Submission(tuple(shas), tuple(verdicts), time.time()))
    del log[:-MAX_ENTRIES]


def undo(conn: sqlite3.Connection, annotator: str, lease_seconds: float) -> Submission | None:
    """Undo the newest submission in the store; returns it, or None when there is none."""
    log = entries()
    if not log:  # a new session (a reload): the store still knows the last verdict
        sha = verdicts.undo_last(conn, annotator, lease_seconds)
        return None if sha is None else Submission((sha,), ("",), time.time())
    entry = log.pop()
    for _ in entry.shas:
        if verdicts.undo_last(conn, annotator, lease_seconds) is None:
            break
    return entry
