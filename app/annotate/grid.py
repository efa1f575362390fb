"""The grid view, the main mode: a page of thumbnails, each "no foreground" until flipped.

The page is a fragment: a key press, a flip or a submit reruns only the grid, never the sidebar.
Tiles sit in rows (``st.columns`` per row), so the document order, the tab order and the keys
``1``-``=`` all follow reading order. The flips live in a form, so flipping costs no round trip;
Submit's ``on_click`` records the whole page through the review API.
"""

from __future__ import annotations

import hashlib
import html
import sqlite3
import time

import streamlit as st

from app.annotate import history, hotkeys
from app.annotate.context import ViewContext, notify, plain, take_notices
from app.annotate.image_loader import CannotShow, load_picture
from app.annotate.images import THUMB_SIDE, img_tag
from curate import store
from curate.review import verdicts
from wood_train.errors import HardoodError

COLUMNS = 4
FLIPPED, DEFAULT = "contains_foreground", "no_foreground"


def page_token(shas: list[str]) -> str:
    return hashlib.sha1("".join(shas).encode()).hexdigest()[:16]


def box_key(sha: str) -> str:
    return f"{hotkeys.GRID_BOX_PREFIX}{sha}"


def submit_page(ctx: ViewContext, token: str) -> None:
    """Submit's callback: record every tile of the page (flipped -> contains foreground)."""
    pages = st.session_state.setdefault("grid_pages", {})
    page = pages.pop(token, None)
    if page is None:  # a second click on a page that is already recorded
        return
    shown_for = time.time() - page["shown_at"]
    if shown_for < ctx.config.dwell_seconds:
        pages[token] = page
        notify(f"Not submitted: the page was on screen for {shown_for:.1f} s. Look first.")
        return
    given = [FLIPPED if st.session_state.get(box_key(sha)) else DEFAULT for sha in page["shas"]]
    seconds = shown_for / len(page["shas"])
    try:
        with store.connect(ctx.config.db) as conn:
            verdicts.record_verdicts(
                conn, ctx.user.name,
                [(sha, verdict, seconds) for sha, verdict in zip(page["shas"], given)],
            )  # fmt: skip
    except verdicts.StalePageError as exc:  # the page outlived its leases: the rest counted
        recorded = {sha for sha, _ in exc.result.recorded}
        kept = [(sha, verdict) for sha, verdict in zip(page["shas"], given) if sha in recorded]
        if kept:
            history.push([sha for sha, _ in kept], [verdict for _, verdict in kept])
        notify(exc.result.message or str(exc), error=True)
        return
    except HardoodError as exc:  # e.g. the queue was rebuilt under this page
        notify(f"Not saved: {exc}", error=True)
        return
    history.push(page["shas"], given)


def tile_html(ctx: ViewContext, conn: sqlite3.Connection, item, index: int) -> str:
    """A tile's image (and its CAM beside it when asked), with alt text and the zoom corner."""
    db, roots = str(ctx.config.db), ctx.image_roots
    alt = f"Tile {index + 1}: #{item.rank}"
    try:
        picture = load_picture(db, conn, item.sha256, THUMB_SIDE, image_roots=roots)
        alt += f", {picture.file_name}"
        if ctx.show_scores:
            alt += f", model's top class {item.top_class}"
        tags = [img_tag(picture.shown, alt, "half" if ctx.with_cam else "")]
        if ctx.with_cam:
            cam = load_picture(db, conn, item.sha256, THUMB_SIDE, True, ctx.cam_opacity, roots)
            tags.append(
                img_tag(cam.shown, f"CAM of {item.top_class} over tile {index + 1}", "half")
            )
    except CannotShow as exc:
        return (
            '<p class="hardood-missing" role="alert">Cannot show this image: '
            f"{html.escape(str(exc))}. Mark it as a bad image in the single view.</p>"
        )
    zoom = f'<span class="hardood-zoom" aria-hidden="true" title="Zoom ({hotkeys.ZOOM_KEY})">&#x2922;</span>'
    title = f' title="{html.escape(item.reason, quote=True)}"' if ctx.show_scores else ""
    return f'<figure class="hardood-tile"{title}>{"".join(tags)}{zoom}</figure>'


@st.fragment
def grid_view(ctx: ViewContext) -> None:
    with store.connect(ctx.config.db) as conn:  # one connection for this run of the grid
        draw_grid(ctx, conn)


def draw_grid(ctx: ViewContext, conn: sqlite3.Connection) -> None:
    pages = st.session_state.setdefault("grid_pages", {})
    items = ctx.lease(conn, ctx.config.grid_size)
    take_notices()
    if not items:
        st.success(
            "Nothing left for you to review: every image has its verdicts or is with someone."
        )
        return
    shas = [item.sha256 for item in items]
    token = page_token(shas)
    pages.setdefault(token, {"shas": shas, "shown_at": time.time()})
    for old in [t for t in pages if t != token]:
        del pages[old]
    restore = st.session_state.pop("restore_flips", {})
    for sha in shas:
        if sha in restore:
            st.session_state[box_key(sha)] = restore[sha]
    with st.form(f"grid__{token}", border=False, enter_to_submit=False):
        for start in range(0, len(items), COLUMNS):
            row = st.columns(COLUMNS, gap="small")
            for offset, item in enumerate(items[start : start + COLUMNS]):
                index = start + offset
                with row[offset], st.container(key=f"{hotkeys.GRID_CELL_PREFIX}{index}", gap=None):
                    st.html(tile_html(ctx, conn, item, index))
                    key = hotkeys.grid_key_label(index)
                    what = (
                        f"{plain(item.top_class)} {item.top_score or 0:.2f}"
                        if ctx.show_scores
                        else f"#{item.rank}"
                    )
                    st.checkbox(
                        f"{f'[{key}] ' if key else ''}{what}",
                        key=box_key(item.sha256),
                    )
        left, right = st.columns([1, 1], vertical_alignment="center")
        left.form_submit_button(
            f"Submit {len(items)} (Enter)",
            key=f"{hotkeys.GRID_SUBMIT_PREFIX}{token}",
            on_click=submit_page,
            args=(ctx, token),
        )
        right.caption(
            "Unchecked = **no foreground**. Check every image that shows one of the classes above."
        )
