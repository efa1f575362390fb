"""What every view of the app is drawn with, and the notices callbacks leave for the next draw."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

import streamlit as st

from app.annotate.launch import AnnotateConfig
from app.annotate.session import User
from curate.review import leases

MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")
# an absolute POSIX or Windows path inside a message: shown by its last part only
ABSOLUTE_PATH = re.compile(r"(?<![\w.~])(?:/|[A-Za-z]:\\)(?:[^\s'\"/\\:]+[/\\])+([^\s'\"/\\:]+)")


@dataclass(frozen=True)
class ViewContext:
    """The app's settings and this session's choices, as one view draws them."""

    config: AnnotateConfig
    user: User
    show_scores: bool  # the model's scores, reasons and CAMs (the lead may hide them)
    with_cam: bool  # the CAM beside each image
    cam_opacity: float

    @property
    def image_roots(self) -> tuple[str, ...]:
        return tuple(str(root) for root in self.config.image_roots)

    def lease(self, conn: sqlite3.Connection, n: int) -> list[leases.ReviewItem]:
        """The annotator's next ``n`` items under the app's overlap, lease and gold settings
        (renewing every lease they hold)."""
        return leases.lease_next(
            conn, self.user.name, self.config.overlap, self.config.lease_seconds, n=n,
            gold_share=self.config.gold_share,
        )  # fmt: skip


def plain(text: str) -> str:
    """Text from the store shown literally in Markdown (no links, emphasis or HTML)."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def without_paths(text: str) -> str:
    """A message fit for an annotator: every absolute path cut to its last part."""
    return ABSOLUTE_PATH.sub(r"\1", str(text))


def notify(message: str, error: bool = False) -> None:
    """Leave a notice for the next draw (callbacks run before anything is drawn)."""
    st.session_state.setdefault("notices", []).append((without_paths(message), error))


def take_notices() -> None:
    """Show and forget the notices left by callbacks."""
    for message, error in st.session_state.pop("notices", []):
        if error:
            st.error(message)
        else:
            st.toast(message)
