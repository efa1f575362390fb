"""The export folder: the files SCHEMA.md names, the usual permissions, cells safe to open in a
spreadsheet, and an ood_list.txt the reference code can still read."""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from pathlib import Path

import pytest

from curate import store
from curate.export.build import export_manifest
from curate.export.files import EXPORT_FILES, NUMERIC_COLUMNS, OOD_LIST_NAME
from curate.review import annotators, verdicts
from tests.curate.review_fixtures import build_review_store
from wood_train.manifest.contract import CSV_NAME, FORMULA_PREFIXES
from wood_train.manifest.ood_list import read_ood_list_txt
from wood_train.manifest.validate import validate_manifest

REPO = Path(__file__).resolve().parents[2]
# pool file names a spreadsheet would run, and two a line list cannot hold
NAMES = [
    "=HYPERLINK(x).png", "+1+2.png", "-x.png", "@SUM(A1).png", "\tq.png", "\rq.png", "x.png ",
    "sub/=inner.png",
]  # fmt: skip


@pytest.fixture
def world(tmp_path):
    world = build_review_store(tmp_path / "w", len(NAMES))
    with store.connect(world.db) as conn:
        annotators.sign_in(conn, "ana")
        with store.transaction(conn):
            for sha, old, new in zip(world.shas, world.relpaths, NAMES):
                (world.root / new).parent.mkdir(parents=True, exist_ok=True)
                (world.root / old).rename(world.root / new)
                conn.execute("UPDATE image_paths SET relpath = ? WHERE sha256 = ?", (new, sha))
        for sha in world.shas:
            verdicts.record_verdict(conn, "ana", sha, "no_foreground", 1.0)
    return world


def test_cells_are_spreadsheet_safe_and_read_back_exactly(world, tmp_path):
    with store.connect(world.db) as conn:
        result = export_manifest(conn, tmp_path / "m")
    raw = (tmp_path / "m" / CSV_NAME).read_bytes().decode("utf-8")  # no newline translation
    records = list(csv.reader(io.StringIO(raw, newline="")))
    header = records[0]
    for record in records[1:]:
        for name, cell in zip(header, record):
            if name not in NUMERIC_COLUMNS:
                assert not cell.startswith(FORMULA_PREFIXES), (name, cell)
    for escaped in ("'=HYPERLINK(x).png,", "'+1+2.png,", "'-x.png,", "'@SUM(A1).png,", "'\tq.png,"):
        assert escaped in raw
    assert '"\'\rq.png",' in raw and "sub/=inner.png," in raw
    loaded = validate_manifest(tmp_path / "m")
    assert sorted(loaded.rows["path"]) == sorted(NAMES)  # exactly the names on disk
    assert sorted(loaded.ood_paths) == sorted(world.root / n for n in NAMES)
    assert result.no_foreground == len(NAMES)


def test_ood_list_stays_readable_by_the_reference_code(world, tmp_path):
    with store.connect(world.db) as conn:
        result = export_manifest(conn, tmp_path / "m")
    text = (tmp_path / "m" / OOD_LIST_NAME).read_bytes().decode("utf-8")
    lines = text.split("\n")[:-1]
    assert sorted(lines) == sorted(
        ["./=HYPERLINK(x).png", "./+1+2.png", "./-x.png", "./@SUM(A1).png", "./\tq.png",
         "sub/=inner.png"]
    )  # fmt: skip
    assert not any(line.startswith(FORMULA_PREFIXES) for line in lines)
    # as the reference reads it: one path per line, joined to --ood_root
    for line in text.splitlines():
        assert os.path.isfile(os.path.join(str(world.root), line.strip())), repr(line)
    listed, _ = read_ood_list_txt(tmp_path / "m" / OOD_LIST_NAME, world.root)
    assert sorted(map(str, listed)) == sorted(str(world.root / n) for n in NAMES[:5] + NAMES[7:])
    report = result.report
    assert sorted(report.ood_list_renamed) == sorted(NAMES[:5])
    assert sorted(report.ood_list_left_out) == sorted(["\rq.png", "x.png "])
    warnings = " ".join(report.warnings)
    assert "5 path(s) start with a spreadsheet formula character" in warnings
    assert "2 path(s) hold a line break or end in white space" in warnings
    meta = validate_manifest(tmp_path / "m").meta["ood_list"]
    assert meta["lines"] == 6 and sorted(meta["left_out"]) == sorted(["\rq.png", "x.png "])


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_the_export_folder_gets_the_usual_permissions(world, tmp_path, umask):
    old = os.umask(umask)
    try:
        with store.connect(world.db) as conn:
            out = export_manifest(conn, tmp_path / "exports" / "m").out_dir
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    for name in EXPORT_FILES:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~umask


def test_schema_md_names_exactly_the_files_an_export_writes(world, tmp_path):
    schema = (REPO / "data_manifests" / "SCHEMA.md").read_text()
    layout = schema.split("## Layout", 1)[1].split("```", 2)[1]
    named = re.findall(r"^\s+(\S+\.\w+)\s", layout, flags=re.MULTILINE)
    assert tuple(named) == EXPORT_FILES
    assert f"holding exactly {len(EXPORT_FILES)} files" in " ".join(schema.split())
    with store.connect(world.db) as conn:
        out = export_manifest(conn, tmp_path / "m").out_dir
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPORT_FILES)
