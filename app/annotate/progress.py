"""The progress view: how far the team is, who did what, and how well verdicts agree.

A fragment that redraws itself every ``REFRESH_SECONDS`` while it is open, so a lead can leave
it on a screen.
"""

from __future__ import annotations

import sqlite3

import pandas as pd
import streamlit as st

from app.annotate.context import ViewContext
from curate import store
from curate.review import agreement as review_agreement
from curate.review import progress as review_progress

REFRESH_SECONDS = 10


def format_duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


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


@st.fragment(run_every=REFRESH_SECONDS)
def progress_view(ctx: ViewContext) -> None:
    with store.connect(ctx.config.db) as conn:  # one connection for this refresh
        draw_progress(ctx, conn)


def draw_progress(ctx: ViewContext, conn: sqlite3.Connection) -> None:
    overlap = ctx.config.overlap
    summary = review_progress.progress_summary(conn, overlap)
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
        f"annotator(s) active in the last 15 min; {overlap} verdict(s) per image. "
        f"Refreshes every {REFRESH_SECONDS} s."
    )
    st.caption(
        f"This round (queue run {summary['round_run_id']}): {summary['round_human_verdicts']} "
        "verdict(s) given in the app. The median and the ETA count only these: earlier rounds' "
        "and simulated verdicts are left out."
    )
    st.subheader("Annotators")
    st.table(annotator_table(review_progress.progress_frame(conn)))
    st.subheader("Agreement on images seen by several annotators")
    agreement = review_agreement.agreement_summary(conn)
    if agreement["method"] is None:
        st.write("No image has verdicts from two annotators yet (use --overlap 2 to measure it).")
    else:
        kappa = "undefined" if agreement["kappa"] is None else f"{agreement['kappa']:.3f}"
        name = "Cohen's" if agreement["method"] == "cohen" else "Fleiss'"
        st.write(
            f"{name} kappa **{kappa}** over {agreement['items']} images and "
            f"{len(agreement['annotators'])} annotators; all verdicts agree on "
            f"{agreement['all_agree']:.0%} of them."
        )
