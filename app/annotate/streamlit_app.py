"""The review app: label the hard-OoD queue as a team. Started by ``hardood annotate``.

Views: Grid (the main mode: a page of thumbnails, each "no foreground" until flipped, Enter
submits), Single (one image, its CAM beside it on request, a verdict per key), History (change a
recent verdict) and Progress. The lead gets Team, Disagreements (``app.annotate.lead``), Progress
and Export (``app.annotate.export_panel``) instead, and holds no leases. All state
that matters lives in the store: buttons record through ``on_click`` callbacks that call the
review API, and each view asks the API for the items to show, so nothing is lost on a reload or a
server restart. The views are fragments: a key press reruns the grid or the image, not the
sidebar. The class list heads every page.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import streamlit as st

from app.annotate import history, hotkeys, session
from app.annotate.context import ViewContext, notify, take_notices, without_paths
from app.annotate.export_panel import export_view, sidebar_export
from app.annotate.grid import FLIPPED, grid_view
from app.annotate.guidelines import load_guidelines
from app.annotate.images import DEFAULT_CAM_OPACITY
from app.annotate.launch import AnnotateConfig, check_config, parse_app_args
from app.annotate.lead import disagreements_view, team_view
from app.annotate.progress import progress_view
from app.annotate.session import User
from app.annotate.settings import scores_hidden, set_scores_hidden
from app.annotate.single import single_view
from curate import store
from curate.review import annotators, leases, verdicts
from wood_train.errors import HardoodError

ANNOTATOR_VIEWS = ("Grid", "Single", "Progress")
LEAD_VIEWS = ("Team", "Disagreements", "Progress", "Export")
CSS = Path(__file__).with_name("annotate.css")


def main() -> None:
    st.set_page_config(page_title="hardood review", layout="wide")
    config = parse_app_args(sys.argv[1:])
    try:
        check_config(config)
    except HardoodError as exc:
        st.error(without_paths(str(exc)))
        return
    st.html(CSS)
    renew_every = max(5.0, config.lease_seconds / 3)
    with st.container(key="hotkeys"):
        st.html(
            hotkeys.hotkeys_html(config.dwell_seconds, renew_every), unsafe_allow_javascript=True
        )
    record_overlap(str(config.db), config.overlap)
    with store.connect(config.db) as conn:  # the page around the views; each view run has its own
        user = session.restore(config)
        if user is None:
            sign_in_view(config, conn)
            return
        if st.session_state.pop("set_cookie", False):
            session.remember(config, user)
        show_scores = not scores_hidden(conn, config)
        view, with_cam, opacity = sidebar(config, conn, user, show_scores)
        ctx = ViewContext(config, user, show_scores, with_cam and show_scores, opacity)
        header(config, conn)
    if view == "Grid":
        grid_view(ctx)
        renew_box(ctx)
    elif view == "Single":
        single_view(ctx)
        renew_box(ctx)
    elif view == "Team":
        take_notices()
        team_view(ctx)
    elif view == "Disagreements":
        disagreements_view(ctx)
    elif view == "Export":
        export_view(ctx)
    else:
        take_notices()
        progress_view(ctx)


# ---- loaders -------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def record_overlap(db: str, overlap: int) -> int:
    """Record the team's overlap in the store, once per server, so ``hardood export`` measures
    "short of the overlap" against what the team was asked for."""
    with store.connect(db) as conn:
        return leases.set_review_overlap(conn, overlap)


@st.cache_data(ttl=60, show_spinner=False)
def class_names(db: str, _conn: sqlite3.Connection) -> list[str]:
    """The store's foreground classes (cached per store; ``_conn`` is not part of the key)."""
    return store.get_classes(_conn) or []


# ---- header and sidebar --------------------------------------------------------------------


def header(config: AnnotateConfig, conn: sqlite3.Connection) -> None:
    """The classes to look for, on every page; the guidelines one click away."""
    names = class_names(str(config.db), conn)
    listed = " · ".join(f"<b>{n}</b>" for n in names) or "(no classes recorded in the store)"
    text = (
        f'<p class="hardood-header">Foreground classes: {listed}. Any of them, even small or '
        "partly hidden, means <em>contains foreground</em>.</p>"
    )
    if config.guidelines is None:
        st.html(text)
        return
    left, right = st.columns([6, 1], vertical_alignment="center")
    with left:
        st.html(text)
    with right, st.popover("Guidelines", width="stretch"):
        show_guidelines(config.guidelines)


def show_guidelines(path: Path) -> None:
    for part in load_guidelines(path):
        if part.image_html:
            st.html(part.image_html)
        else:
            st.markdown(part.markdown)


def sidebar(
    config: AnnotateConfig, conn: sqlite3.Connection, user: User, show_scores: bool
) -> tuple[str, bool, float]:
    """The sidebar; returns the chosen view, whether to show CAMs, and their opacity."""
    with st.sidebar:
        st.markdown(f"Signed in as **{user.name}**" + (" (lead)" if user.is_lead else ""))
        views = LEAD_VIEWS if user.is_lead else ANNOTATOR_VIEWS
        view = st.radio("View", views, horizontal=True, key="view")
        with_cam, opacity = False, DEFAULT_CAM_OPACITY
        if show_scores and not user.is_lead:  # the lead sees every score in the lead's views
            with_cam = st.toggle(
                f"CAM beside the image ({hotkeys.CAM_KEY})", key=hotkeys.CAM_WIDGET
            )
            if with_cam:
                opacity = st.slider(
                    "CAM opacity", 0.0, 1.0, DEFAULT_CAM_OPACITY, 0.1, key="cam_opacity"
                )
        if not user.is_lead:
            count = verdicts.verdict_count(conn, user.name)
            st.caption(f"{count} verdicts by you · {config.overlap} verdict(s) per image")
            st.button(
                f"Undo last ({hotkeys.UNDO_KEY})", key=hotkeys.UNDO_WIDGET,
                on_click=undo_last_submission, args=(config, user),
            )  # fmt: skip
            with st.expander("Keyboard shortcuts"):
                st.markdown(hotkeys.shortcuts_markdown())
        if user.is_lead:
            st.toggle(
                "Hide the model's scores from annotators", value=not show_scores,
                key="lead_hide_scores", on_change=switch_scores, args=(config,),
                help="scores, reasons and CAMs; the model's guess can anchor a verdict",
            )  # fmt: skip
        if not user.is_lead and config.lead_password_env is None:  # the lead has a view for it
            sidebar_export(config, conn)
        st.button("Sign out", key="sign_out", on_click=sign_out, args=(config, user))
    return view, with_cam, opacity


# ---- callbacks (each records one thing through the API) ------------------------------------


def undo_last_submission(config: AnnotateConfig, user: User) -> None:
    """Undo's callback: the last submission comes back, every flip as it was submitted."""
    with store.connect(config.db) as conn:
        entry = history.undo(conn, user.name, config.lease_seconds)
    if entry is None:
        notify("Nothing to undo.")
        return
    st.session_state["restore_flips"] = {
        sha: verdict == FLIPPED for sha, verdict in zip(entry.shas, entry.verdicts)
    }
    notify(f"Undid your last {len(entry.shas)} verdict(s); shown again as you gave them.")


def switch_scores(config: AnnotateConfig) -> None:
    """The lead's switch: what every annotator's next page shows."""
    with store.connect(config.db) as conn:
        set_scores_hidden(conn, st.session_state["lead_hide_scores"])


def sign_out(config: AnnotateConfig, user: User) -> None:
    if not user.is_lead:
        with store.connect(config.db) as conn:
            leases.release(conn, user.name)
    st.session_state.clear()
    st.session_state["signed_out"] = True


@st.fragment
def renew_box(ctx: ViewContext) -> None:
    """A hidden button the page script clicks while the annotator is active on a page."""
    with st.container(key="renew_box"):
        st.button("renew", key=hotkeys.RENEW_WIDGET, on_click=renew_leases, args=(ctx,))


def renew_leases(ctx: ViewContext) -> None:
    # lease_next renews every lease the annotator holds; the page size keeps it to this page
    with store.connect(ctx.config.db) as conn:
        ctx.lease(conn, ctx.config.grid_size)


# ---- sign-in --------------------------------------------------------------------------


def sign_in_view(config: AnnotateConfig, conn: sqlite3.Connection) -> None:
    if st.session_state.get("signed_out"):
        session.forget(config)
    st.title("Review hard out-of-distribution candidates")
    st.write(
        "Each image scored high for a foreground class. Say whether any foreground class really "
        "appears. Sign in with your name; your verdicts are saved as you go."
    )
    needs_password = config.password_env is not None or config.lead_password_env is not None
    with st.form("sign_in"):
        name = st.text_input("Your name", max_chars=64)
        password = st.text_input("Password", type="password") if needs_password else ""
        submitted = st.form_submit_button("Sign in")
    if config.guidelines is not None:
        with st.expander("Guidelines", expanded=True):
            show_guidelines(config.guidelines)
    if not submitted:
        return
    role = session.role_for_password(config, password)
    if role is None:
        time.sleep(1.0)  # slows down guessing
        st.error("Wrong password.")
        return
    try:
        name = (
            annotators.sign_in_lead(conn, name)
            if role == session.LEAD
            else annotators.sign_in(conn, name)
        )
    except HardoodError as exc:
        st.error(str(exc))
        return
    st.session_state.user = User(name, role)
    st.session_state.set_cookie = True
    st.session_state.pop("signed_out", None)
    st.rerun()


main()
