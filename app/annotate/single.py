"""The single view: one image (and its CAM beside it), a verdict per key.

A fragment like the grid: a verdict reruns only this view. Each verdict button's ``on_click``
records the verdict for the item the button was drawn for, so a press always lands on the image
the annotator saw.
"""

from __future__ import annotations

import sqlite3
import time

import streamlit as st

from app.annotate import history, hotkeys
from app.annotate.context import ViewContext, notify, plain, take_notices
from app.annotate.image_loader import CannotShow, load_picture
from app.annotate.images import DISPLAY_SIDE, img_tag, legend_html
from curate import store
from curate.review import verdicts
from wood_train.errors import HardoodError

VERDICT_LABELS = {
    "no_foreground": "No foreground",
    "contains_foreground": "Contains foreground",
    "unsure": "Unsure",
    "bad_image": "Bad image",
}


def record_single(ctx: ViewContext, sha: str, verdict: str) -> None:
    """A verdict button's callback: record the verdict for the item it was drawn for."""
    shown_at = st.session_state.get("shown_at", {})
    started = shown_at.get(sha)
    seconds = None if started is None else time.time() - started
    if verdict == "no_foreground" and seconds is not None and seconds < ctx.config.dwell_seconds:
        notify(f"Not recorded: the image was on screen for {seconds:.1f} s. Look first.")
        return
    try:
        with store.connect(ctx.config.db) as conn:
            recorded = verdicts.record_verdict(conn, ctx.user.name, sha, verdict, seconds)
    except verdicts.StalePageError as exc:  # the lease ran out and the image went elsewhere
        notify(exc.result.message or str(exc), error=True)
        return
    except HardoodError as exc:  # e.g. the queue was rebuilt under this image
        notify(f"Not saved: {exc}", error=True)
        return
    shown_at.pop(sha, None)
    if recorded is not None:
        history.push([sha], [verdict])


def image_html(ctx: ViewContext, conn: sqlite3.Connection, item) -> str:
    db, roots = str(ctx.config.db), ctx.image_roots
    picture = load_picture(db, conn, item.sha256, DISPLAY_SIDE, image_roots=roots)
    alt = f"#{item.rank}, {picture.file_name}"
    if ctx.show_scores:
        alt += f", model's top class {item.top_class}"
    if not ctx.with_cam:
        return f'<figure class="hardood-single">{img_tag(picture.shown, alt)}</figure>'
    cam = load_picture(db, conn, item.sha256, DISPLAY_SIDE, True, ctx.cam_opacity, roots)
    cam_alt = f"CAM of {item.top_class} over #{item.rank}"
    return (
        f'<figure class="hardood-single">{img_tag(picture.shown, alt, "half")}'
        f"{img_tag(cam.shown, cam_alt, 'half')}</figure>{legend_html(item.top_class)}"
    )


@st.fragment
def single_view(ctx: ViewContext) -> None:
    with store.connect(ctx.config.db) as conn:  # one connection for this run of the view
        draw_single(ctx, conn)


def draw_single(ctx: ViewContext, conn: sqlite3.Connection) -> None:
    shown_at = st.session_state.setdefault("shown_at", {})
    items = ctx.lease(conn, 1)
    take_notices()
    if not items:
        st.success(
            "Nothing left for you to review: every image has its verdicts or is with someone."
        )
        return
    item = items[0]
    started = shown_at.get(item.sha256, time.time())
    shown_at.clear()
    shown_at[item.sha256] = started
    left, right = st.columns([3, 1], gap="medium")
    with left, st.container(key=f"{hotkeys.ITEM_PREFIX}{item.sha256}"):
        try:
            st.html(image_html(ctx, conn, item))
        except CannotShow as exc:
            st.error(f"Cannot show this image: {exc}. Mark it as a bad image.")
    with right:
        if ctx.show_scores:
            st.markdown(f"**#{item.rank}** · {plain(item.reason)}")
            st.markdown("\n".join(f"- {plain(name)}: **{score:.2f}**" for name, score in item.top3))
        else:
            st.markdown(f"**#{item.rank}**")
        for verdict, label in VERDICT_LABELS.items():
            key = next(k for k, v in hotkeys.VERDICT_KEYS.items() if v == verdict)
            st.button(
                f"{label} ({key})",
                key=f"{hotkeys.VERDICT_PREFIX}{verdict}__{item.sha256}",
                on_click=record_single,
                args=(ctx, item.sha256, verdict),
                width="stretch",
            )
