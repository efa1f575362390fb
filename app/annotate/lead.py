"""The lead's views: Team (who works, how well, who holds what) and Disagreements (the lead
decides, and may make the decision gold). Progress is the view annotators have too
(``app.annotate.progress``); Export is ``app.annotate.export_panel``.

The lead holds no leases and gives no votes: every button records through the review API
(``curate.review.adjudication``, ``curate.review.gold``) in its ``on_click`` callback, and each
view reads the store afresh, so a reload or a second lead sees the same state.
"""

from __future__ import annotations

import html
import sqlite3
import time

import pandas as pd
import streamlit as st

from app.annotate import hotkeys
from app.annotate.context import ViewContext, notify, plain, take_notices, without_paths
from app.annotate.image_loader import CannotShow, load_picture
from app.annotate.images import DEFAULT_CAM_OPACITY, DISPLAY_SIDE, img_tag, legend_html
from app.annotate.progress import format_duration
from app.annotate.single import VERDICT_LABELS
from curate import store
from curate.review import adjudication, gold, team
from wood_train.errors import HardoodError

REFRESH_SECONDS = 10
ADJUDICATED_SHOWN = 50  # adjudicated items listed under the open one, most urgent first
GOLD_BUTTON_PREFIX = "gold__"  # f"{GOLD_BUTTON_PREFIX}{sha256}": mark / unmark one item gold


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%} ({part} of {whole})" if whole else ""


def _clock(seconds: float | None) -> str:
    if seconds is None or pd.isna(seconds):
        return ""
    return time.strftime("%H:%M:%S UTC", time.gmtime(seconds))


def team_table(report: pd.DataFrame) -> pd.DataFrame:
    """The lead's per-annotator table from ``team.annotator_report``, formatted for reading."""
    rows = [
        {
            "annotator": row.annotator,
            "status": row.status,
            "items held": row.held,
            "verdicts this round": int(row.round_verdicts or 0),
            "verdicts in all": int(row.verdicts or 0),
            "median s / verdict": "" if row.median_seconds is None else f"{row.median_seconds:.1f}",
            "agrees with consensus": _share(row.agreed, row.compared),
            "gold accuracy": _share(row.gold_correct, row.gold_judged),
            "last verdict": _clock(row.last_verdict_at),
        }
        for row in report.itertuples()
    ]
    return pd.DataFrame(rows).set_index("annotator") if rows else pd.DataFrame()


def held_table(held: pd.DataFrame) -> pd.DataFrame:
    """Who holds which item, from ``team.held_items``: the item, for how long, until when."""
    return pd.DataFrame(
        {
            "annotator": held["annotator"],
            "image": [
                "gold check" if is_gold else f"#{int(rank)}" if pd.notna(rank) else "not queued"
                for rank, is_gold in zip(held["queue_rank"], held["gold_check"])
            ],
            "sha256": held["sha256"].str[:12],
            "held for": [format_duration(s) for s in held["held_seconds"]],
            "until": [_clock(t) for t in held["expires_at"]],
        }
    )


# ---- Team ------------------------------------------------------------------------------------


@st.fragment(run_every=REFRESH_SECONDS)
def team_view(ctx: ViewContext) -> None:
    with store.connect(ctx.config.db) as conn:  # one connection for this refresh
        draw_team(ctx, conn)


def draw_team(ctx: ViewContext, conn: sqlite3.Connection) -> None:
    now = time.time()
    report = team.annotator_report(conn, now=now)
    idle = report[report["status"] == team.IDLE]
    if len(idle):
        names = ", ".join(f"{r.annotator} ({r.held} held)" for r in idle.itertuples())
        st.warning(
            f"Idle: {names}: holding items without a verdict for over "
            f"{team.IDLE_AFTER_S / 60:.0f} min. Their items go back to the queue when the leases "
            "end."
        )
    st.subheader("Annotators")
    if report.empty:
        st.write("Nobody has signed in as an annotator yet.")
    else:
        st.table(team_table(report))
        st.caption(
            "Agreement: each annotator against the others' majority (or the lead's adjudication) "
            "on images several judged. Speed: this round's verdicts given in the app. Gold "
            "accuracy: right answers on gold images. Refreshes every "
            f"{REFRESH_SECONDS} s."
        )
    st.subheader("Held items")
    held = team.held_items(conn, now=now)
    if held.empty:
        st.write("Nobody holds an item now.")
    else:
        st.table(held_table(held))
    st.subheader("Gold")
    items = gold.gold_items(conn)
    by_source = items["source"].value_counts().to_dict()
    share = ctx.config.gold_share
    st.write(
        f"{len(items)} gold image(s) ({by_source.get('lead', 0)} marked by a lead, "
        f"{by_source.get('truth', 0)} from known truth). "
        + (
            f"About {share:.0%} of each annotator's items are gold checks (`--gold-share`)."
            if share
            else "Annotators get no gold checks: start the app with `--gold-share 0.05` for 5%."
        )
    )


# ---- Disagreements ---------------------------------------------------------------------------


def record_adjudication(ctx: ViewContext, sha: str, verdict: str) -> None:
    """An adjudication button's callback: the lead's verdict on the item it was drawn for."""
    try:
        with store.connect(ctx.config.db) as conn:
            adjudication.adjudicate(conn, ctx.user.name, sha, verdict)
    except HardoodError as exc:
        notify(f"Not saved: {exc}", error=True)
        return
    st.session_state["last_adjudicated"] = sha
    notify(f"{sha[:12]}: adjudicated as {VERDICT_LABELS[verdict].lower()}.")


def switch_gold(ctx: ViewContext, sha: str, make_gold: bool) -> None:
    """A gold button's callback: make an adjudicated item gold, or take it out of the gold set."""
    try:
        with store.connect(ctx.config.db) as conn:
            if make_gold:
                answer = gold.mark_gold(conn, ctx.user.name, sha)
            else:
                gold.unmark_gold(conn, ctx.user.name, sha)
    except HardoodError as exc:
        notify(f"Not saved: {exc}", error=True)
        return
    if make_gold:
        notify(f"{sha[:12]} is gold: its answer is {VERDICT_LABELS[answer].lower()}.")
    else:
        notify(f"{sha[:12]} is no longer gold.")


@st.fragment
def disagreements_view(ctx: ViewContext) -> None:
    with store.connect(ctx.config.db) as conn:  # one connection for this run of the view
        draw_disagreements(ctx, conn)


def draw_disagreements(ctx: ViewContext, conn: sqlite3.Connection) -> None:
    queue = adjudication.disagreements(conn)
    take_notices()
    waiting = queue[queue["adjudicated"].isna()]
    decided = queue[queue["adjudicated"].notna()]
    st.caption(
        f"{len(waiting)} image(s) wait for you, {len(decided)} adjudicated. An image is here when "
        "its votes differ or someone voted unsure. Your verdict decides it in the export under "
        "every label policy. " + hotkeys.lead_shortcuts_markdown()
    )
    last = st.session_state.get("last_adjudicated")
    if last is not None and last in set(decided["sha256"]):
        row = decided[decided["sha256"] == last].iloc[0]
        if not row["gold"]:
            st.button(
                f"Mark {last[:12]} gold ({hotkeys.GOLD_KEY})", key=hotkeys.GOLD_WIDGET,
                on_click=switch_gold, args=(ctx, last, True),
                help="gold images measure each annotator; their answer is your adjudication",
            )  # fmt: skip
    if waiting.empty:
        st.success("No disagreement waits for you.")
    else:
        draw_open_item(ctx, conn, waiting.iloc[0])
    if not decided.empty:
        st.subheader("Adjudicated")
        for row in decided.head(ADJUDICATED_SHOWN).itertuples():
            draw_decided_row(ctx, row)
        if len(decided) > ADJUDICATED_SHOWN:
            st.caption(f"and {len(decided) - ADJUDICATED_SHOWN} more")


def _votes_markdown(votes: str) -> str:
    lines = []
    for given in votes.split("; "):
        name, _, verdict = given.partition(": ")
        lines.append(f"- {plain(name)}: **{VERDICT_LABELS.get(verdict, verdict).lower()}**")
    return "\n".join(lines)


def draw_open_item(ctx: ViewContext, conn: sqlite3.Connection, row: pd.Series) -> None:
    sha = row["sha256"]
    left, right = st.columns([3, 1], gap="medium")
    with left, st.container(key=f"adjitem__{sha}"):
        st.html(item_html(ctx, conn, sha, row["queue_rank"], row["top_class"] or ""))
    with right:
        rank = "" if pd.isna(row["queue_rank"]) else f"#{int(row['queue_rank'])} · "
        st.markdown(f"**{rank}{sha[:12]}**")
        st.markdown(_votes_markdown(row["votes"]))
        if row["top_class"] is not None:
            st.caption(
                f"Model: {plain(row['top_class'])} {row['top_score']:.2f} · {plain(row['reason'])}"
            )
        for verdict, label in VERDICT_LABELS.items():
            key = next(k for k, v in hotkeys.VERDICT_KEYS.items() if v == verdict)
            st.button(
                f"{label} ({key})", key=f"{hotkeys.ADJUDICATE_PREFIX}{verdict}__{sha}",
                on_click=record_adjudication, args=(ctx, sha, verdict), width="stretch",
            )  # fmt: skip


def item_html(ctx: ViewContext, conn: sqlite3.Connection, sha: str, rank, top_class: str) -> str:
    """The image and the CAM of the model's top class beside it, with the CAM's legend."""
    db, roots = str(ctx.config.db), ctx.image_roots
    try:
        picture = load_picture(db, conn, sha, DISPLAY_SIDE, image_roots=roots)
    except CannotShow as exc:
        return (
            f'<p role="alert">Cannot show this image: {html.escape(without_paths(str(exc)))}.</p>'
        )
    where = "" if rank is None or pd.isna(rank) else f"#{int(rank)}, "
    tags = [img_tag(picture.shown, f"{where}{picture.file_name}", "half")]
    try:
        cam = load_picture(db, conn, sha, DISPLAY_SIDE, True, DEFAULT_CAM_OPACITY, roots)
        tags.append(img_tag(cam.shown, f"CAM of {top_class} over {picture.file_name}", "half"))
        legend = legend_html(top_class)
    except CannotShow:  # no CAM stored: the image alone
        legend = ""
    return f'<figure class="hardood-single">{"".join(tags)}</figure>{legend}'


def draw_decided_row(ctx: ViewContext, row) -> None:
    cells = st.columns([2, 4, 2, 1], vertical_alignment="center")
    rank = "" if pd.isna(row.queue_rank) else f"#{int(row.queue_rank)} · "
    cells[0].markdown(f"{rank}`{row.sha256[:12]}`")
    cells[1].markdown(plain(row.votes))
    verdict = VERDICT_LABELS.get(row.adjudicated, row.adjudicated).lower()
    cells[2].markdown(f"**{verdict}**" + (" · gold" if row.gold else ""))
    cells[3].button(
        "Unmark gold" if row.gold else "Mark gold", key=f"{GOLD_BUTTON_PREFIX}{row.sha256}",
        on_click=switch_gold, args=(ctx, row.sha256, not row.gold),
    )  # fmt: skip
