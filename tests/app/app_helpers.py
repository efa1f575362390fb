"""Drive the review app with Streamlit's AppTest against a temporary store."""

from __future__ import annotations

import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

from app.annotate import hotkeys
from curate import store
from curate.review import verdicts

SCRIPT = str(Path(__file__).resolve().parents[2] / "app" / "annotate" / "streamlit_app.py")


def open_app(monkeypatch, db, *args: str) -> AppTest:
    if "--dwell-seconds" not in args:  # AppTest clicks at once; the dwell has its own test
        args = ("--dwell-seconds", "0", *args)
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--db", str(db), *args])
    at = AppTest.from_file(SCRIPT, default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    return at


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def sign_in(at: AppTest, name: str, password: str | None = None) -> AppTest:
    at.text_input[0].input(name)
    if password is not None:
        at.text_input[1].input(password)
    button(at, "Sign in").click()
    at.run()
    assert not at.exception, at.exception
    return at


def shown_sha(at: AppTest) -> str:
    """The item the single view shows, read from its verdict buttons' keys."""
    prefix = f"{hotkeys.VERDICT_PREFIX}no_foreground__"
    (key,) = [b.key for b in at.button if b.key and b.key.startswith(prefix)]
    return key[len(prefix) :]


def press_verdict(at: AppTest, verdict: str, sha: str) -> AppTest:
    at.button(key=f"{hotkeys.VERDICT_PREFIX}{verdict}__{sha}").click()
    at.run()
    assert not at.exception, at.exception
    return at


def grid_shas(at: AppTest) -> list[str]:
    """The grid page in reading order (thumbnail i is labelled with its key, "[1]".."[=]")."""
    boxes = [c for c in at.checkbox if (c.key or "").startswith("gridcb__")]
    boxes.sort(key=lambda c: hotkeys.GRID_KEYS.index(c.label[1]))
    return [c.key.removeprefix("gridcb__") for c in boxes]


def submit_grid(at: AppTest) -> AppTest:
    (submit,) = [b for b in at.button if (b.key or "").startswith(hotkeys.GRID_SUBMIT_PREFIX)]
    submit.click()
    at.run()
    assert not at.exception, at.exception
    return at


def verdicts_by_sha(db) -> dict[str, str]:
    with store.connect(db) as conn:
        frame = verdicts.live_verdicts(conn)
    return dict(zip(frame["sha256"], frame["verdict"]))
