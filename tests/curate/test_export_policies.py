"""Label policies say what they did: unsure votes, ties, items short of the overlap, the lead's
adjudications and annotators dropped for their gold accuracy, each planted and counted."""

from __future__ import annotations

from collections import Counter

import pytest

from curate import store
from curate.export.build import build_export, export_manifest, format_report
from curate.export.policies import item_verdict
from curate.review import adjudication, annotators, gold, verdicts
from tests.curate.review_fixtures import CLASSES, build_review_store
from wood_train.manifest.contract import CSV_NAME, ManifestError
from wood_train.manifest.validate import validate_manifest

N, C, U, B = "no_foreground", "contains_foreground", "unsure", "bad_image"
# item index -> votes; the team's overlap is 2
VOTES = {
    0: [("ana", N), ("bo", N)],  # agreed
    1: [("ana", N), ("bo", U)],  # one unsure: majority keeps it, unanimous and any block it
    2: [("ana", N), ("bo", C)],  # a tie
    3: [("ana", C), ("bo", C)],
    4: [("ana", N)],  # short of the overlap
    5: [("ana", U)],  # short, and unsure
}
EXPECTED = {  # item -> verdict under majority, unanimous, any
    0: (N, N, N), 1: (N, U, U), 2: (U, U, C), 3: (C, C, C), 4: (N, N, N), 5: (U, U, U),
}  # fmt: skip


@pytest.fixture
def reviewed(tmp_path):
    world = build_review_store(tmp_path / "w", 8)
    with store.connect(world.db) as conn:
        for i, given in VOTES.items():
            for name, verdict in given:
                annotators.sign_in(conn, name)
                verdicts.record_verdict(conn, name, world.shas[i], verdict, 1.0, k=2)
    return world


def test_unsure_counts_as_schema_md_says():
    assert item_verdict(Counter({N: 1, U: 1}), "majority") == N  # abstains
    assert item_verdict(Counter({N: 1, U: 1}), "unanimous") == U  # blocks
    assert item_verdict(Counter({N: 1, U: 1}), "any") == U  # blocks
    assert item_verdict(Counter({C: 1, U: 1}), "any") == C
    assert item_verdict(Counter({N: 2, U: 1}), "unanimous") == U
    assert item_verdict(Counter({N: 2, C: 1, U: 3}), "majority") == N


@pytest.mark.parametrize("column", range(3))
def test_each_policy_reports_counts_ties_and_short_items(reviewed, tmp_path, column):
    policy = ("majority", "unanimous", "any")[column]
    with store.connect(reviewed.db) as conn:
        rows, meta, report = build_export(conn, policy, k=2)
    by_sha = rows.set_index("sha256")["verdict"]
    assert {i: by_sha[reviewed.shas[i]] for i in VOTES} == {
        i: v[column] for i, v in EXPECTED.items()
    }
    chosen = report.chosen
    assert chosen.policy == policy and report.overlap == 2
    assert chosen.counts == dict(Counter(v[column] for v in EXPECTED.values()), **{
        v: 0 for v in (N, C, U, B) if v not in {e[column] for e in EXPECTED.values()}
    })  # fmt: skip
    assert chosen.ties == 1 and chosen.ties_became == {EXPECTED[2][column]: 1}
    assert chosen.short_of_overlap == 2
    assert chosen.short_became == dict(Counter([EXPECTED[4][column], EXPECTED[5][column]]))
    assert chosen.blocked_by_unsure == (0 if policy == "majority" else 1)
    assert [p.policy for p in report.policies] == ["majority", "unanimous", "any"]
    assert meta["policy_report"]["ties"] == 1 and meta["overlap"] == 2
    # the manifest holds the unsure votes, and the validator re-derives every verdict from them
    with store.connect(reviewed.db) as conn:
        out = export_manifest(conn, tmp_path / policy, policy, k=2)
    loaded = validate_manifest(out.out_dir, expected_classes=CLASSES)
    assert loaded.rows.set_index("sha256").loc[reviewed.shas[1], "votes_unsure"] == "1"


def test_the_command_line_prints_every_policy_and_the_warnings(reviewed, tmp_path):
    with store.connect(reviewed.db) as conn:
        result = export_manifest(conn, tmp_path / "m", "unanimous", k=2)
    lines = format_report(result).splitlines()
    assert lines[0] == (
        f"exported 6 reviewed images -> {tmp_path / 'm'} (policy unanimous, overlap 2; "
        "10 votes from 2 annotator(s))"
    )
    rows = {line.split()[0]: line.split() for line in lines[2:5]}
    assert rows["unanimous"][:6] == ["unanimous", "*", "2", "1", "3", "0"]
    assert rows["majority"][:5] == ["majority", "3", "1", "2", "0"]
    assert rows["any"][:5] == ["any", "2", "2", "2", "0"]
    assert lines[5:] == [
        "warning: 1 image(s) end in a tie; unanimous exported them as 1 unsure",
        "warning: 2 image(s) have fewer than 2 vote(s); unanimous exported them from the votes "
        "they have: 1 no_foreground, 1 unsure",
        "warning: 1 image(s) are unsure only because someone voted unsure",
    ]


def test_the_leads_adjudication_decides_under_every_policy(reviewed, tmp_path):
    with store.connect(reviewed.db) as conn:
        lead = annotators.sign_in_lead(conn, "lee")
        adjudication.adjudicate(conn, lead, reviewed.shas[2], N)  # the tie
        for policy in ("majority", "unanimous", "any"):
            rows, _, report = build_export(conn, policy, k=2)
            row = rows.set_index("sha256").loc[reviewed.shas[2]]
            assert (row["verdict"], row["adjudicated_verdict"]) == (N, N)
            assert (row["votes_no_foreground"], row["votes_contains_foreground"]) == (1, 1)
            assert report.chosen.adjudicated == 1 and report.chosen.ties_became == {N: 1}
        out = export_manifest(conn, tmp_path / "m", "any", k=2).out_dir
    assert reviewed.root / reviewed.relpaths[2] in validate_manifest(out).ood_paths
    # the validator holds the row to its adjudication
    lines = (out / CSV_NAME).read_text().splitlines(keepends=True)
    (row,) = [i for i, line in enumerate(lines) if reviewed.shas[2] in line]
    lines[row] = lines[row].replace(",no_foreground,", ",contains_foreground,", 1)
    (out / CSV_NAME).write_text("".join(lines))
    with pytest.raises(ManifestError, match="disagrees with its votes"):
        validate_manifest(out)


def test_annotators_below_a_gold_accuracy_are_dropped_at_export(reviewed):
    with store.connect(reviewed.db) as conn:
        # truth: items 0-3 hold no foreground; bo is wrong on 1, 2 and 3, ana only on 3
        gold.add_gold(conn, {reviewed.shas[i]: N for i in range(4)})
        rows, meta, report = build_export(conn, "majority", k=2, min_gold_accuracy=0.6,
                                          min_gold_judged=4)  # fmt: skip
        assert report.dropped_annotators == ("bo",) and meta["dropped_annotators"] == ["bo"]
        assert set(";".join(rows["annotators"].map(";".join)).split(";")) == {"ana"}
        by_sha = rows.set_index("sha256")["verdict"]
        assert by_sha[reviewed.shas[2]] == N  # the tie is ana's alone now
        assert "votes of bo were left out" in " ".join(report.warnings)
        # too few gold items judged: nobody is dropped
        _, _, kept = build_export(conn, "majority", k=2, min_gold_accuracy=0.6, min_gold_judged=5)
        assert kept.dropped_annotators == ()


def test_the_validator_holds_unanimous_rows_to_their_unsure_votes(reviewed, tmp_path):
    with store.connect(reviewed.db) as conn:
        out = export_manifest(conn, tmp_path / "m", "unanimous", k=2).out_dir
    lines = (out / CSV_NAME).read_text().splitlines(keepends=True)
    (row,) = [i for i, line in enumerate(lines) if reviewed.shas[1] in line]
    lines[row] = lines[row].replace(",unsure,", ",no_foreground,", 1)  # 1 no_fg + 1 unsure
    (out / CSV_NAME).write_text("".join(lines))
    with pytest.raises(ManifestError, match="under label_policy 'unanimous', which gives 'unsure'"):
        validate_manifest(out)
