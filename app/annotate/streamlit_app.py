"""The review app: label the hard-OoD queue as a team. Started by ``hardood annotate``.

Views: Grid (the main mode: a page of thumbnails, each "no foreground" until flipped, Enter
submits), Single (one image, the CAM on a toggle, a verdict per key) and Progress. All state that
matters lives in the store: each run of this script first commits what the browser sent (a verdict,
a page, an undo), then asks ``curate.review`` for the items to show, so nothing is lost on a reload
or a server restart. Each run opens one store connection and passes it to every call. A widget's
key carries the item it was drawn for, so a press always lands on the item the annotator saw.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import sys
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from app.annotate import hotkeys
from app.annotate.images import DISPLAY_SIDE, THUMB_SIDE, render_jpeg
from app.annotate.launch import AnnotateConfig, check_config, parse_app_args
from curate import store
from curate.export import build as export
from curate.ingest.image_files import read_image_bytes
from curate.review import agreement, annotators, leases, verdicts
from curate.review import progress as review_progress
from wood_train.data.imageio import decode_image
from wood_train.manifest.contract import LABEL_POLICIES

VIEWS = ("Grid", "Single", "Progress")
VERDICT_LABELS = {
    "no_foreground": "No foreground",
    "contains_foreground": "Contains foreground",
    "unsure": "Unsure",
    "bad_image": "Bad image",
}
EXPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
CSS = Path(__file__).with_name("annotate.css")
MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def main() -> None:
    st.set_page_config(page_title="hardood review", layout="wide")
    config = parse_app_args(sys.argv[1:])
    try:
        check_config(config)
    except (ValueError, FileNotFoundError) as exc:
        st.error(str(exc))
        return
    st.html(CSS)
    with st.container(key="hotkeys"):
        st.html(hotkeys.hotkeys_html(), unsafe_allow_javascript=True)
    with store.connect(config.db) as conn:  # one connection for this run of the script
        annotator = st.session_state.get("annotator")
        if annotator is None:
            sign_in_view(config, conn)
            return
        try:
            notice = commit_pending(config, conn, annotator)  # before anything is drawn
        except (ValueError, KeyError) as exc:  # e.g. the queue was rebuilt under this page
            notice = None
            st.error(f"Not saved: {exc}")
        view = sidebar(config, conn, annotator)
        if notice:
            st.toast(notice)
        if view == "Grid":
            grid_view(config, conn, annotator)
        elif view == "Single":
            single_view(config, conn, annotator)
        else:
            progress_view(config, conn)


# ---- loaders -------------------------------------------------------------------------------


@st.cache_data(max_entries=512, show_spinner=False)
def load_jpeg(db: str, _conn, sha256: str, side: int, with_cam: bool) -> bytes:
    """The image as shown: verified bytes from a registered root, scaled, CAM on request.

    Cached per (store file, image, side, CAM); ``_conn``, the run's connection, is not part of
    the key.
    """
    data, path = read_image_bytes(_conn, sha256)
    heatmap = leases.item_heatmap(_conn, sha256) if with_cam else None
    return render_jpeg(decode_image(data, path), side, heatmap)


def show_image(conn, sha256: str, side: int, with_cam: bool) -> None:
    try:
        st.image(load_jpeg(str(store.db_path(conn)), conn, sha256, side, with_cam), width="stretch")
    except (OSError, ValueError) as exc:  # missing, changed or undecodable file
        st.error(f"Cannot show this image: {exc}. Mark it as a bad image.")


def plain(text: str) -> str:
    """Text from the store shown literally in Markdown (no links, emphasis or HTML)."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def pressed(prefix: str) -> str | None:
    """The rest of the key of a button with this key prefix pressed in the browser's last run.

    Read before the page is drawn, so the press is committed before anything new is shown.
    """
    for key in list(st.session_state.keys()):
        if isinstance(key, str) and key.startswith(prefix) and st.session_state[key] is True:
            return key[len(prefix) :]
    return None


# ---- views ---------------------------------------------------------------------------------


def sign_in_view(config: AnnotateConfig, conn) -> None:
    st.title("Review hard out-of-distribution candidates")
    st.write(
        "Each image scored high for a foreground class. Say whether any foreground class really "
        "appears. Sign in with your name; your verdicts are saved as you go."
    )
    with st.form("sign_in"):
        name = st.text_input("Your name", max_chars=64)
        password = st.text_input("Team password", type="password") if config.password_env else ""
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return
    if config.password_env:
        expected = os.environ.get(config.password_env, "")
        if not hmac.compare_digest(password.encode(), expected.encode()):
            time.sleep(1.0)  # slows down guessing
            st.error("Wrong team password.")
            return
    try:
        st.session_state.annotator = annotators.sign_in(conn, name)
    except ValueError as exc:
        st.error(str(exc))
        return
    st.rerun()


def sidebar(config: AnnotateConfig, conn, annotator: str) -> str:
    with st.sidebar:
        st.markdown(f"Signed in as **{annotator}**")
        view = st.radio("View", VIEWS, horizontal=True, key="view")
        st.toggle("CAM overlay (h)", key=hotkeys.CAM_WIDGET)
        count = verdicts.verdict_count(conn, annotator)
        st.caption(f"{count} verdicts by you · {config.overlap} verdict(s) per image")
        with st.expander("Keyboard shortcuts"):
            st.markdown(hotkeys.shortcuts_markdown())
        export_panel(config, conn)
        if st.button("Sign out", key="sign_out"):
            leases.release(conn, annotator)
            del st.session_state["annotator"]
            st.rerun()
    return view


def commit_pending(config: AnnotateConfig, conn, annotator: str) -> str | None:
    """Commit the verdict, grid page or undo the browser sent; returns a notice to show."""
    press = pressed(hotkeys.VERDICT_PREFIX)
    if press is not None:
        verdict, sha = press.split("__", 1)
        started = st.session_state.get("shown_at", {}).pop(sha, None)
        seconds = None if started is None else time.time() - started
        verdicts.record_verdict(conn, annotator, sha, verdict, seconds)
    token = pressed(hotkeys.GRID_SUBMIT_PREFIX)
    page = st.session_state.get("grid_pages", {}).pop(token, None) if token else None
    if page is not None:
        seconds = (time.time() - page["shown_at"]) / len(page["shas"])
        flipped = [st.session_state.get(f"gridcb__{sha}", False) for sha in page["shas"]]
        verdicts.record_verdicts(
            conn,
            annotator,
            [(sha, "contains_foreground" if f else "no_foreground", seconds)
             for sha, f in zip(page["shas"], flipped)],
        )  # fmt: skip
    if st.session_state.get(hotkeys.UNDO_WIDGET) is True:
        if verdicts.undo_last(conn, annotator, config.lease_seconds) is not None:
            return "Undid your last verdict; that image is shown again."
        return "Nothing to undo."
    return None


def single_view(config: AnnotateConfig, conn, annotator: str) -> None:
    shown_at = st.session_state.setdefault("shown_at", {})
    items = leases.lease_next(conn, annotator, config.overlap, config.lease_seconds, n=1)
    if not items:
        queue_finished()
        return
    item = items[0]
    started = shown_at.get(item.sha256, time.time())
    shown_at.clear()
    shown_at[item.sha256] = started
    left, right = st.columns([3, 1], gap="medium")
    with left, st.container(key=f"item__{item.sha256}"):
        show_image(conn, item.sha256, DISPLAY_SIDE, st.session_state[hotkeys.CAM_WIDGET])
    with right:
        st.markdown(f"**#{item.rank}** · {plain(item.reason)}")
        st.markdown("\n".join(f"- {plain(name)}: **{score:.2f}**" for name, score in item.top3))
        for verdict, label in VERDICT_LABELS.items():
            key = next(k for k, v in hotkeys.VERDICT_KEYS.items() if v == verdict)
            st.button(
                f"{label} ({key})",
                key=f"{hotkeys.VERDICT_PREFIX}{verdict}__{item.sha256}",
                type="primary" if verdict == "no_foreground" else "secondary",
                width="stretch",
            )
        st.button(f"Undo last ({hotkeys.UNDO_KEY})", key=hotkeys.UNDO_WIDGET, width="stretch")


def grid_view(config: AnnotateConfig, conn, annotator: str) -> None:
    pages = st.session_state.setdefault("grid_pages", {})
    items = leases.lease_next(
        conn, annotator, config.overlap, config.lease_seconds, n=config.grid_size
    )
    if not items:
        queue_finished()
        return
    shas = [item.sha256 for item in items]
    token = hashlib.sha1("".join(shas).encode()).hexdigest()[:16]
    pages.setdefault(token, {"shas": shas, "shown_at": time.time()})
    for old in [t for t in pages if t != token]:
        del pages[old]
    with_cam = st.session_state[hotkeys.CAM_WIDGET]
    st.caption(
        "Every image starts as **no foreground**. Flip the ones that show a foreground class "
        "(click, or its key), then press **Enter**."
    )
    with st.form(f"grid__{token}", border=False):
        columns = st.columns(4)
        for i, item in enumerate(items):
            with columns[i % 4], st.container(key=f"{hotkeys.GRID_CELL_PREFIX}{i}"):
                show_image(conn, item.sha256, THUMB_SIDE, with_cam)
                key = hotkeys.grid_key_label(i)
                st.checkbox(
                    f"{f'[{key}] ' if key else ''}{plain(item.top_class)} {item.top_score or 0:.2f}",
                    key=f"gridcb__{item.sha256}",
                    help=plain(item.reason),
                )
        st.form_submit_button(
            f"Submit {len(items)} (Enter)",
            key=f"{hotkeys.GRID_SUBMIT_PREFIX}{token}",
            type="primary",
        )
    st.button(f"Undo last ({hotkeys.UNDO_KEY})", key=hotkeys.UNDO_WIDGET)


def queue_finished() -> None:
    st.success("Nothing left for you to review: every image has its verdicts or is with someone.")
    st.button(f"Undo last ({hotkeys.UNDO_KEY})", key=hotkeys.UNDO_WIDGET)


def progress_view(config: AnnotateConfig, conn) -> None:
    summary = review_progress.progress_summary(conn, config.overlap)
    total = summary["queue_items"]
    columns = st.columns(4)
    columns[0].metric("Done", f"{summary['done_items']} / {total}")
    columns[1].metric("Remaining", summary["remaining_items"])
    median = summary["median_seconds"]
    columns[2].metric("Median s / verdict", "n/a" if median is None else f"{median:.1f}")
    eta = summary["eta_seconds"]
    columns[3].metric("ETA", "n/a" if eta is None else format_duration(eta))
    st.progress(summary["done_items"] / total if total else 0.0)
    st.caption(
        f"{summary['verdicts']} verdicts ({summary['undone_verdicts']} undone), "
        f"{summary['leased_items']} image(s) with someone now, {summary['active_annotators']} "
        f"annotator(s) active in the last 15 min; {config.overlap} verdict(s) per image."
    )
    st.subheader("Annotators")
    st.table(annotator_table(review_progress.progress_frame(conn)))
    st.subheader("Agreement on images seen by several annotators")
    team = agreement.agreement_summary(conn)
    if team["method"] is None:
        st.write("No image has verdicts from two annotators yet (use --overlap 2 to measure it).")
    else:
        kappa = "undefined" if team["kappa"] is None else f"{team['kappa']:.3f}"
        name = "Cohen's" if team["method"] == "cohen" else "Fleiss'"
        st.write(
            f"{name} kappa **{kappa}** over {team['items']} images and "
            f"{len(team['annotators'])} annotators; all verdicts agree on "
            f"{team['all_agree']:.0%} of them."
        )


def export_panel(config: AnnotateConfig, conn) -> None:
    with st.expander("Export manifest"), st.form("export"):
        default = f"{Path(config.db).stem}_{time.strftime('%Y%m%d')}"
        name = st.text_input("Name", value=default, help=f"written under {config.export_dir}")
        policy = st.selectbox("Label policy", LABEL_POLICIES)
        force = st.checkbox("Replace an existing export")
        if not st.form_submit_button("Export"):
            return
    if not EXPORT_NAME.fullmatch(name):
        st.sidebar.error("Use letters, digits, '.', '_' or '-' for the export name.")
        return
    try:
        result = export.export_manifest(conn, Path(config.export_dir) / name, policy, force)
    except (OSError, ValueError) as exc:
        st.sidebar.error(str(exc))
        return
    st.sidebar.success(
        f"Exported {result.images} images ({result.no_foreground} no foreground) to "
        f"{result.out_dir}"
    )


def annotator_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-annotator progress, rounded for reading."""
    return frame.assign(
        median_seconds=[f"{v:.1f}" if pd.notna(v) else "" for v in frame["median_seconds"]],
        total_seconds=frame["total_seconds"].round(0).astype(int),
        last_verdict_at=[
            t.strftime("%Y-%m-%d %H:%M UTC") if pd.notna(t) else ""
            for t in frame["last_verdict_at"]
        ],
    ).set_index("annotator")


def format_duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


main()
