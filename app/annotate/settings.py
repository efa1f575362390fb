"""Settings the lead changes while the team works, kept in the store so every session sees them."""

from __future__ import annotations

import sqlite3

from app.annotate.launch import AnnotateConfig
from curate import store

HIDE_SCORES_META = "app.hide_scores"  # "1" or "0"; absent: --hide-scores decides


def scores_hidden(conn: sqlite3.Connection, config: AnnotateConfig) -> bool:
    """Whether annotators see the model's scores: the lead's switch, else ``--hide-scores``."""
    value = store.get_meta(conn, HIDE_SCORES_META)
    return config.hide_scores if value is None else value == "1"


def set_scores_hidden(conn: sqlite3.Connection, hidden: bool) -> None:
    """The lead's switch: hide (or show) the model's scores, reasons and CAMs to annotators."""
    with store.transaction(conn):
        store.set_meta(conn, HIDE_SCORES_META, "1" if hidden else "0")
