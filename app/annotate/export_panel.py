"""Export from the app: the manifest folder, with the same report ``hardood export`` prints.

The lead's Export view shows the whole report (a row per label policy: rows per verdict, ties,
images short of the overlap and what the policy made of them) and its warnings; ``Check`` builds
the report without writing anything. A local app without a lead keeps a small Export panel in the
sidebar, which shows the same warnings under its result. Both export with the app's
``--overlap``, so "short of the overlap" means what the team was asked for.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import streamlit as st

from app.annotate.context import ViewContext, plain, take_notices, without_paths
from app.annotate.launch import AnnotateConfig
from curate import store
from curate.export import build as export
from curate.export.report import ExportReport, policy_table
from wood_train.errors import HardoodError
from wood_train.manifest.contract import LABEL_POLICIES

EXPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
NAME_RULE = "Use letters, digits, '.', '_' or '-' for the export name."


def default_name(config: AnnotateConfig) -> str:
    return f"{Path(config.db).stem}_{time.strftime('%Y%m%d')}"


def show_report(report: ExportReport) -> None:
    """The policy table and the warnings, as ``hardood export`` prints them."""
    st.table(policy_table(report).set_index("policy"))
    st.caption(
        f"The chosen policy is marked with a star. Overlap {report.overlap}: an image with "
        "fewer votes is short. "
        f"{report.votes} votes from {report.annotators} annotator(s), {report.gold_checks} gold "
        "check(s) (not votes)."
    )
    for warning in report.warnings:  # may quote file names: shown literally
        st.warning(plain(warning))
    if not report.warnings:
        st.write("No ties and no image short of the overlap under this policy.")


def export_view(ctx: ViewContext) -> None:
    """The lead's export: check what each policy makes of the verdicts, then write the folder."""
    config = ctx.config
    take_notices()
    st.subheader("Export the manifest")
    with st.form("lead_export", enter_to_submit=False):
        name = st.text_input(
            "Name", value=default_name(config),
            help=f"a folder under {Path(config.export_dir).name}/",
        )  # fmt: skip
        policy = st.selectbox("Label policy", LABEL_POLICIES)
        min_gold = st.number_input(
            "Leave out the votes of annotators below this gold accuracy (0 keeps every vote)",
            min_value=0.0, max_value=1.0, value=0.0, step=0.05,
            help=f"applies to annotators with at least {export.DEFAULT_MIN_GOLD_JUDGED} gold "
            "images judged",
        )  # fmt: skip
        force = st.checkbox("Replace an existing export")
        left, right = st.columns(2)
        check = left.form_submit_button("Check (writes nothing)")
        write = right.form_submit_button("Export")
    if not (check or write):
        st.caption(
            "Check shows what every label policy would make of the verdicts now: the rows per "
            "verdict, the ties, the images short of the overlap and what the policy does with them."
        )
        return
    min_accuracy = min_gold or None
    with store.connect(config.db) as conn:
        try:
            if write:
                if not EXPORT_NAME.fullmatch(name):
                    st.error(NAME_RULE)
                    return
                result = export.export_manifest(
                    conn, Path(config.export_dir) / name, policy, force, config.overlap,
                    min_accuracy,
                )  # fmt: skip
                report = result.report
                st.success(
                    f"Exported {result.images} images ({result.no_foreground} no foreground) to "
                    f"{Path(config.export_dir).name}/{name}"
                )
            else:
                _, _, report = export.build_export(conn, policy, config.overlap, min_accuracy)
                st.info("Checked: nothing was written.")
        except HardoodError as exc:
            st.error(without_paths(str(exc)))
            return
    show_report(report)


def sidebar_export(config: AnnotateConfig, conn: sqlite3.Connection) -> None:
    """The sidebar's Export panel (a local app without a lead); its warnings below the result."""
    with st.expander("Export manifest"), st.form("export", enter_to_submit=False):
        name = st.text_input(
            "Name",
            value=default_name(config),
            help=f"a folder under {Path(config.export_dir).name}/",
        )
        policy = st.selectbox("Label policy", LABEL_POLICIES)
        force = st.checkbox("Replace an existing export")
        if not st.form_submit_button("Export"):
            return
    if not EXPORT_NAME.fullmatch(name):
        st.sidebar.error(NAME_RULE)
        return
    try:
        result = export.export_manifest(
            conn, Path(config.export_dir) / name, policy, force, config.overlap
        )
    except HardoodError as exc:
        st.sidebar.error(without_paths(str(exc)))
        return
    st.sidebar.success(
        f"Exported {result.images} images ({result.no_foreground} no foreground) to "
        f"{Path(config.export_dir).name}/{name}"
    )
    for warning in result.report.warnings:
        st.sidebar.warning(plain(warning))
