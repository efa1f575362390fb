"""Export: planted votes -> manifest v1 + ood_list.txt, checked by wood_train's validator."""

from __future__ import annotations

import json
import shutil

import pytest

from app.cli import main, parse_args
from curate import store
from curate.export.build import OOD_LIST_NAME, build_export, export_manifest
from curate.export.policies import item_verdict
from curate.review import annotators, verdicts
from tests.curate.review_fixtures import CHECKPOINT, CLASSES, build_review_store
from wood_train.errors import OutputExistsError
from wood_train.manifest.validate import validate_manifest

# item index -> (annotator, verdict, seconds) votes
VOTES = {
    0: [("ana", "no_foreground", 2.0), ("bo", "no_foreground", 3.0)],
    1: [("ana", "no_foreground", 1.0), ("bo", "contains_foreground", 5.0)],
    2: [("ana", "contains_foreground", 4.0)],
    3: [("ana", "no_foreground", 2.0), ("bo", "no_foreground", 2.0), ("cy", "contains_foreground", 6.0)],
    4: [("ana", "bad_image", 1.0), ("bo", "bad_image", 1.0), ("cy", "no_foreground", 1.0)],
    5: [("ana", "unsure", 3.0)],
}  # fmt: skip
EXPECTED = {
    "majority": ["no_foreground", "unsure", "contains_foreground", "no_foreground", "bad_image", "unsure"],
    "unanimous": ["no_foreground", "unsure", "contains_foreground", "unsure", "bad_image", "unsure"],
    "any": ["no_foreground", "contains_foreground", "contains_foreground", "contains_foreground", "bad_image", "unsure"],
}  # fmt: skip


@pytest.fixture
def reviewed(tmp_path):
    world = build_review_store(tmp_path / "w", 8)
    with store.connect(world.db) as conn:
        for name in ("ana", "bo", "cy"):
            annotators.sign_in(conn, name)
        for i, votes in VOTES.items():
            for name, verdict, seconds in votes:
                verdicts.record_verdict(conn, name, world.shas[i], verdict, seconds, k=3)
        # item 6 was judged, then undone: not exported; item 7 was never judged
        verdicts.record_verdict(conn, "ana", world.shas[6], "no_foreground", 9.0)
        assert verdicts.undo_last(conn, "ana") == world.shas[6]
    return world


@pytest.fixture
def conn(reviewed):
    with store.connect(reviewed.db) as connection:
        yield connection


@pytest.mark.parametrize("policy", ["majority", "unanimous", "any"])
def test_export_round_trips_through_the_validator(reviewed, conn, tmp_path, policy):
    out = tmp_path / "data_manifests" / f"hard_{policy}"
    result = export_manifest(conn, out, policy=policy)
    assert (result.images, result.verdicts) == (6, 12)
    loaded = validate_manifest(out, expected_classes=CLASSES, check_files=True, check_hashes=True)
    by_sha = loaded.rows.set_index("sha256")
    assert sorted(by_sha.index) == sorted(reviewed.shas[:6])
    for i, expected in enumerate(EXPECTED[policy]):
        row = by_sha.loc[reviewed.shas[i]]
        assert row["verdict"] == expected, (i, policy)
        assert row["path"] == reviewed.relpaths[i]
        assert row["top_class"] == reviewed.top_classes[i]
        assert row["annotators"] == ";".join(sorted({n for n, _, _ in VOTES[i]}))
    wanted = [i for i, v in enumerate(EXPECTED[policy]) if v == "no_foreground"]
    assert sorted(loaded.ood_paths) == sorted(reviewed.root / reviewed.relpaths[i] for i in wanted)
    # ood_list.txt: the same paths relative to image_root, in queue order
    lines = (out / OOD_LIST_NAME).read_text().splitlines()
    assert lines == [reviewed.relpaths[i] for i in wanted]
    meta = loaded.meta
    assert meta["image_root"] == str(reviewed.root) and meta["label_policy"] == policy
    assert meta["scoring_checkpoint_sha256"] == CHECKPOINT
    assert meta["mining"]["queue_run"]["config"] == {"top": 8, "seed": 0}
    cost = meta["labelling_cost"]
    assert cost["verdicts"] == 12 and cost["images_reviewed"] == 6 and cost["annotators"] == 3
    assert cost["seconds_total"] == 31.0 and cost["seconds_median"] == 2.0
    assert cost["verdicts_by_source"] == {"app": 12}


def test_export_refuses_to_overwrite_without_force(reviewed, conn, tmp_path):
    out = tmp_path / "exports" / "m"
    export_manifest(conn, out)
    before = (out / "manifest.csv").read_text()
    with pytest.raises(FileExistsError, match="--force"):
        export_manifest(conn, out)
    verdicts.record_verdict(conn, "bo", reviewed.shas[7], "no_foreground", 1.0)
    export_manifest(conn, out, force=True)
    assert (out / "manifest.csv").read_text() != before
    assert len(validate_manifest(out).rows) == 7
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]  # no temporary folders left
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an export"):
        export_manifest(conn, out, force=True)


def test_export_rebuild_is_byte_identical(reviewed, conn, tmp_path):
    export_manifest(conn, tmp_path / "a")
    export_manifest(conn, tmp_path / "b")
    for name in ("manifest.csv", OOD_LIST_NAME):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_images_from_two_roots_resolve_under_their_common_folder(reviewed, conn, tmp_path):
    second = tmp_path / "w" / "more" / "batch2"
    second.mkdir(parents=True)
    moved = reviewed.root / reviewed.relpaths[0]
    shutil.copy(moved, second / "a.png")
    with store.transaction(conn):
        root_id = store.ensure_root(conn, second)
        conn.execute("DELETE FROM image_paths WHERE sha256 = ?", (reviewed.shas[0],))
        conn.execute(
            "INSERT INTO image_paths(root_id, relpath, sha256) VALUES (?, 'a.png', ?)",
            (root_id, reviewed.shas[0]),
        )
    loaded = validate_manifest(export_manifest(conn, tmp_path / "m").out_dir)
    assert loaded.image_root == (tmp_path / "w").resolve()
    paths = dict(zip(loaded.rows["sha256"], loaded.rows["path"]))
    assert paths[reviewed.shas[0]] == "more/batch2/a.png"
    assert paths[reviewed.shas[1]] == "pool/" + reviewed.relpaths[1]


def test_export_errors_are_clear(tmp_path):
    world = build_review_store(tmp_path / "w", 3)
    with store.connect(world.db) as conn:
        with pytest.raises(ValueError, match="no verdicts yet"):
            build_export(conn)
        with pytest.raises(ValueError, match="unknown label policy"):
            build_export(conn, policy="most")
        annotators.sign_in(conn, "ana")
        verdicts.record_verdict(conn, "ana", world.shas[0], "no_foreground", 1.0)
        (world.root / world.relpaths[0]).unlink()
        with pytest.raises(FileNotFoundError, match="pool moved"):
            build_export(conn)


def test_item_verdict_bad_image_needs_the_most_votes():
    from collections import Counter

    assert item_verdict(Counter(bad_image=2, no_foreground=1), "majority") == "bad_image"
    assert item_verdict(Counter(bad_image=1, no_foreground=1), "majority") == "no_foreground"
    assert item_verdict(Counter(unsure=2), "any") == "unsure"


def _export_cli(argv):
    args = parse_args(["export", *argv])
    return args.func(args)


def test_cli_export_and_its_errors(reviewed, conn, tmp_path, capsys):
    out = tmp_path / "cli"
    assert _export_cli(["--db", str(reviewed.db), "--out", str(out), "--policy", "any"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == (
        f"exported 6 reviewed images -> {out} (policy any, overlap 1; 12 votes from 3 annotator(s))"
    )
    table = {line.split()[0]: line.split() for line in printed[2:5]}
    assert table["any"][1:6] == ["*", "1", "3", "1", "1"]  # no_fg, contains, unsure, bad_image
    assert table["majority"][1:5] == ["2", "1", "2", "1"]
    # user errors are HardoodErrors, which `hardood` prints as one line and exits 2
    with pytest.raises(OutputExistsError, match="already holds an export"):
        _export_cli(["--db", str(reviewed.db), "--out", str(out)])
    assert main(["export", "--db", str(tmp_path / "nope.db"), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"hardood export: error: curation database not found: {tmp_path / 'nope.db'} "
        "(run `hardood mine` first)"
    ]
    with pytest.raises(SystemExit):
        _export_cli(["--db", str(reviewed.db), "--out", str(out), "--policy", "most"])
    runs = conn.execute("SELECT status, counts_json FROM runs WHERE command = 'export'").fetchall()
    assert [r["status"] for r in runs] == ["done"]
    assert json.loads(runs[0]["counts_json"])["no_foreground"] == 1


def test_cli_export_under_a_file_names_the_flag_and_writes_nothing(
    reviewed, conn, tmp_path, capsys
):
    afile = tmp_path / "afile"
    afile.write_text("notes")
    out = afile / "sub"
    assert main(["export", "--db", str(reviewed.db), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"hardood export: error: --out {out}: {afile} is a file, not a folder, so the export "
        "cannot be written under it; choose an --out outside it"
    ]
    assert afile.read_text() == "notes"
    assert conn.execute("SELECT COUNT(*) FROM runs WHERE command = 'export'").fetchone()[0] == 0


def test_an_error_never_claims_no_verdicts_when_verdicts_exist(tmp_path):
    world = build_review_store(tmp_path / "w", 3)
    with store.connect(world.db) as conn:
        annotators.sign_in(conn, "ana")
        verdicts.record_verdict(conn, "ana", world.shas[0], "no_foreground", 1.0)
        with store.transaction(conn):  # the queue is rebuilt without it: still exported
            conn.execute("DELETE FROM queue")
        rows, _, _ = build_export(conn)
        assert rows["sha256"].tolist() == [world.shas[0]]
        with store.transaction(conn):  # its facts and scores are gone: say that, not "none"
            conn.execute("UPDATE verdicts SET top_score = NULL, top_class = NULL")
            conn.execute("DELETE FROM scores")
        with pytest.raises(ValueError, match="1 reviewed image.* have no scores") as info:
            build_export(conn)
        assert "no verdicts" not in str(info.value)
        with store.transaction(conn):  # only a gold check left: say so
            conn.execute("UPDATE verdicts SET gold_check = 1")
        with pytest.raises(ValueError, match="1 live verdict.*none is a vote.*1 gold check"):
            build_export(conn)
