"""The manifest contract: atomic, reproducible writes and validation that names every bad row."""

import codecs
import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wood_train.manifest.contract import (
    COLUMNS,
    CSV_NAME,
    META_NAME,
    ManifestError,
    escape_cell,
    unescape_cell,
    verdict_from_votes,
)
from wood_train.manifest.ood_list import load_ood_list, load_ood_set
from wood_train.manifest.validate import validate_manifest
from wood_train.manifest.write import write_manifest

CLASSES = ["cat", "train", "boat"]
# (file, verdict, top_class, top_score, votes_no, votes_yes)
PLANTED = [
    ("rails/a.png", "no_foreground", "train", 0.93, 2, 0),
    ("water/b.png", "contains_foreground", "boat", 0.88, 0, 2),
    ("sky/c.png", "unsure", "cat", 0.71, 1, 1),
    ("rails/d.png", "no_foreground", "train", 0.65, 3, 1),
    ("junk/e.png", "bad_image", "cat", 0.51, 0, 0),
]


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "pool"
    rng = np.random.default_rng(0)
    for rel, *_ in PLANTED:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(root / rel)
    return root


def rows_for(root):
    return pd.DataFrame(
        [
            {
                "path": rel,
                "sha256": hashlib.sha256((root / rel).read_bytes()).hexdigest(),
                "verdict": verdict,
                "top_class": top_class,
                "top_score": score,
                "votes_no_foreground": no,
                "votes_contains_foreground": yes,
                "annotators": ["ana", "ben"],
                "hardness_score": score * 2,
            }
            for rel, verdict, top_class, score, no, yes in PLANTED
        ]
    )


def meta_for(root, **changes):
    meta = {
        "image_root": str(root),
        "classes": CLASSES,
        "scoring_checkpoint_sha256": "ab" * 32,
        "mining": {"pool": "test", "score_threshold": 0.5},
        "label_policy": "majority",
        "labelling_cost": {"images_reviewed": 5},
    }
    meta.update(changes)
    return meta


def test_round_trip_keeps_no_foreground_rows(tmp_path, images):
    out = write_manifest(tmp_path / "m", rows_for(images), meta_for(images))
    loaded = validate_manifest(out, expected_classes=CLASSES)
    assert loaded.ood_paths == sorted(
        [images / "rails/a.png", images / "rails/d.png"],
        key=lambda p: hashlib.sha256(p.read_bytes()).hexdigest(),
    )
    assert list(loaded.rows["sha256"]) == sorted(loaded.rows["sha256"])
    assert list(loaded.rows.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert "hardness_score" in loaded.rows.columns
    assert set(loaded.rows["annotators"]) == {"ana;ben"}
    assert loaded.rows["votes_no_foreground"].sum() == 6
    assert loaded.meta["schema_version"] == 1 and loaded.meta["created_at"]
    assert loaded.meta["tool_version"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "pool"]  # no temporary leftovers
    assert load_ood_list(out) == loaded.ood_paths
    assert load_ood_list(out / CSV_NAME, expected_classes=CLASSES) == loaded.ood_paths


def test_rebuild_from_shuffled_rows_is_byte_identical(tmp_path, images):
    rows = rows_for(images)
    meta = meta_for(images, created_at="2024-01-01T00:00:00+00:00", tool_version="0.1.0")
    first = write_manifest(tmp_path / "one", rows, meta)
    second = write_manifest(tmp_path / "two", rows.sample(frac=1.0, random_state=3), meta)
    for name in (CSV_NAME, META_NAME):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_write_refuses_to_overwrite_without_force(tmp_path, images):
    out = write_manifest(tmp_path / "m", rows_for(images), meta_for(images))
    with pytest.raises(FileExistsError, match="force"):
        write_manifest(out, rows_for(images).iloc[:2], meta_for(images))
    assert len(validate_manifest(out).rows) == len(PLANTED)
    write_manifest(out, rows_for(images).iloc[:2], meta_for(images), force=True)
    assert len(validate_manifest(out).rows) == 2
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        write_manifest(out, rows_for(images), meta_for(images), force=True)


def test_write_checks_rows_first_and_writes_nothing(tmp_path, images):
    rows = rows_for(images)
    rows.loc[1, "verdict"] = "maybe"
    with pytest.raises(ManifestError, match=r"row 1 \(water/b.png\): verdict 'maybe'"):
        write_manifest(tmp_path / "m", rows, meta_for(images))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool"]


def test_image_root_relative_to_the_manifest_folder(tmp_path, images):
    out = write_manifest(tmp_path / "m", rows_for(images), meta_for(images, image_root="../pool"))
    assert validate_manifest(out).image_root == images.resolve()


def corrupt(folder, edit):
    lines = (folder / CSV_NAME).read_text().splitlines()
    edit(lines)
    (folder / CSV_NAME).write_text("\n".join(lines) + "\n")


def test_validate_reports_every_bad_row_with_line_and_path(tmp_path, images):
    out = write_manifest(tmp_path / "m", rows_for(images), meta_for(images))
    loaded = validate_manifest(out)
    line_of = dict(zip(loaded.rows["path"], loaded.rows["line"]))
    sha_of = dict(zip(loaded.rows["path"], loaded.rows["sha256"]))

    def edit(lines):
        for i, text in enumerate(lines):
            if text.startswith("water/b.png"):
                lines[i] = text.replace("contains_foreground", "maybe")
            if text.startswith("sky/c.png"):  # 1-1 votes under majority give unsure, not this
                lines[i] = text.replace(",unsure,", ",no_foreground,")
            if text.startswith("rails/d.png"):
                lines[i] = text.replace("0.65", "1.7")
        lines.append(lines[line_of["rails/a.png"] - 1].replace("rails/a.png", "rails/copy.png"))
        lines.append(lines[line_of["junk/e.png"] - 1])

    corrupt(out, edit)
    (images / "rails/a.png").write_bytes(b"changed after review")
    (images / "junk/e.png").unlink()
    with pytest.raises(ManifestError) as info:
        validate_manifest(out, expected_classes=["cat", "train", "bus"])
    message = str(info.value)
    n = len(PLANTED) + 1
    expected = [
        "classes differ from the checkpoint's (not in the checkpoint: ['boat']; missing: ['bus'])",
        f"line {line_of['water/b.png']} (water/b.png): verdict 'maybe' is not one of",
        f"line {line_of['sky/c.png']} (sky/c.png): verdict 'no_foreground' disagrees with",
        f"line {line_of['rails/d.png']} (rails/d.png): top_score '1.7' is not a probability",
        f"line {n + 1} (rails/copy.png): duplicate sha256 (same as line {line_of['rails/a.png']})",
        f"line {n + 2} (junk/e.png): duplicate sha256 (same as line {line_of['junk/e.png']})",
        f"line {n + 2} (junk/e.png): duplicate path (same as line {line_of['junk/e.png']})",
        f"line {line_of['rails/a.png']} (rails/a.png): file bytes do not match sha256",
        f"line {line_of['rails/a.png']} (rails/a.png): not a usable image (not_an_image",
        f"line {line_of['junk/e.png']} (junk/e.png): file not found",
        f"line {n + 2} (junk/e.png): file not found",
        f"line {n + 1} (rails/copy.png): file not found",
    ]
    for text in expected:
        assert text in message, text
    assert sha_of["rails/a.png"] not in message  # rows are named by line and path, not hash
    assert len(info.value.problems) == len(expected)


def test_validate_lists_the_first_max_errors(tmp_path, images):
    out = write_manifest(tmp_path / "m", rows_for(images), meta_for(images))
    corrupt(
        out,
        lambda lines: lines.__setitem__(
            slice(1, None), [t.replace(",0.", ",9.") for t in lines[1:]]
        ),
    )
    with pytest.raises(ManifestError) as info:
        validate_manifest(out, check_files=False, max_errors=2)
    assert len(info.value.problems) == len(PLANTED)
    assert str(info.value).count("top_score") == 2
    assert f"... and {len(PLANTED) - 2} more" in str(info.value)


def test_validate_refuses_unknown_version_and_missing_columns(tmp_path, images):
    out = write_manifest(tmp_path / "m", rows_for(images), meta_for(images))
    meta = json.loads((out / META_NAME).read_text())
    (out / META_NAME).write_text(json.dumps({**meta, "schema_version": 7}))
    with pytest.raises(ManifestError, match="unknown schema_version 7"):
        validate_manifest(out)
    (out / META_NAME).write_text(json.dumps({k: v for k, v in meta.items() if k != "mining"}))
    corrupt(out, lambda lines: lines.__setitem__(0, lines[0].replace("top_score", "score")))
    with pytest.raises(ManifestError) as info:
        validate_manifest(out)
    assert "missing key(s) ['mining']" in str(info.value)
    assert "missing column(s) ['top_score']" in str(info.value)
    (out / META_NAME).unlink()
    with pytest.raises(ManifestError, match=f"missing {META_NAME}"):
        validate_manifest(out)


def test_load_reference_txt_list(tmp_path, images):
    listing = tmp_path / "ood_list.txt"
    listing.write_text("rails/a.png\n\nsky/c.png\n")
    assert load_ood_list(listing, image_root=images) == [
        images / "rails/a.png",
        images / "sky/c.png",
    ]
    listing.write_text("rails/a.png\nmissing.png\nrails/a.png\n")
    with pytest.raises(ManifestError) as info:
        load_ood_list(listing, image_root=images)
    assert "line 2 (missing.png): file not found" in str(info.value)
    assert "line 3 (rails/a.png): duplicate of line 1" in str(info.value)
    with pytest.raises(ManifestError, match="pass --ood-image-root FOLDER"):
        load_ood_list(listing)


def test_load_refuses_a_manifest_with_nothing_to_train(tmp_path, images):
    rows = rows_for(images)
    rows = rows[rows["verdict"] != "no_foreground"]
    out = write_manifest(tmp_path / "m", rows, meta_for(images))
    with pytest.raises(ManifestError, match="nothing to train on"):
        load_ood_list(out)


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("majority", ["unsure", "no_foreground", "contains_foreground", "unsure", "no_foreground"]),
        ("unanimous", ["unsure", "no_foreground", "contains_foreground", "unsure", "unsure"]),
        (
            "any",
            [
                "unsure",
                "no_foreground",
                "contains_foreground",
                "contains_foreground",
                "contains_foreground",
            ],
        ),
    ],
)
def test_verdict_from_votes(policy, expected):
    votes = [(0, 0), (2, 0), (0, 1), (1, 1), (3, 1)]
    assert [verdict_from_votes(no, yes, policy) for no, yes in votes] == expected


# ---- hostile and careless manifests (each refused with one clear problem) ------------------


def _meta_file(out):
    return json.loads((out / META_NAME).read_text())


def test_deeply_nested_meta_is_refused_without_recursion_error(tmp_path, images):
    out = write_manifest(tmp_path / "m", rows_for(images), meta_for(images))
    meta = _meta_file(out)
    deep = "[" * 200_000 + "]" * 200_000
    text = json.dumps(meta)[:-1] + ', "mining_detail": ' + deep + "}"
    (out / META_NAME).write_text(text)
    with pytest.raises(ManifestError, match="nests objects or lists more than 32 deep"):
        validate_manifest(out)
    # brackets inside strings are text, not nesting
    (out / META_NAME).write_text(json.dumps({**meta, "mining": {"note": "[" * 100}}))
    validate_manifest(out)
    (out / META_NAME).write_text(json.dumps({**meta, "mining": {"pad": "x" * (2 << 20)}}))
    with pytest.raises(ManifestError, match="a manifest's meta holds at most 1048576"):
        validate_manifest(out)


@pytest.mark.parametrize("version", [True, 1.0, "1", None])
def test_schema_version_must_be_the_integer_1(tmp_path, images, version):
    out = write_manifest(tmp_path / "m", rows_for(images), meta_for(images))
    (out / META_NAME).write_text(json.dumps({**_meta_file(out), "schema_version": version}))
    with pytest.raises(ManifestError, match=f"unknown schema_version {version!r}"):
        validate_manifest(out)


def test_annotators_must_be_reviewer_ids(tmp_path, images):
    rows = rows_for(images)
    rows["annotators"] = ["ana;ben", "ana@lab.org", "", "Ana Lopez;b-2", "x.y_z"]
    out = write_manifest(tmp_path / "m", rows, meta_for(images))
    assert validate_manifest(out)  # every legal spelling passes
    line_of = dict(zip(validate_manifest(out).rows["path"], validate_manifest(out).rows["line"]))

    def edit(lines):
        for i, text in enumerate(lines):
            if text.startswith("rails/a.png"):
                lines[i] = text.replace("ana;ben", "\"ana;=cmd|' /C calc'!A0\"")

    corrupt(out, edit)
    with pytest.raises(ManifestError) as info:
        validate_manifest(out)
    assert info.value.problems == [
        f"line {line_of['rails/a.png']} (rails/a.png): annotators \"ana;=cmd|' /C calc'!A0\": "
        "\"=cmd|' /C calc'!A0\" is not a reviewer id (1-64 letters, digits, spaces or . _ @ -, "
        "starting with a letter or digit)"
    ]


def test_spreadsheet_escaped_cells_read_back_exactly(tmp_path, images):
    (images / "=HYPERLINK(x).png").write_bytes((images / "rails/a.png").read_bytes())
    rows = rows_for(images).iloc[1:].copy()  # the renamed copy replaces rails/a.png
    rows.loc[len(rows) + 1] = {**rows_for(images).iloc[0].to_dict(), "path": "=HYPERLINK(x).png"}
    out = write_manifest(tmp_path / "m", rows, meta_for(images))

    def edit(lines):  # the escaped form an export writes for a spreadsheet (SCHEMA.md)
        for i, text in enumerate(lines):
            if text.startswith("=HYPERLINK"):
                lines[i] = escape_cell("=HYPERLINK(x).png") + text[len("=HYPERLINK(x).png") :]

    corrupt(out, edit)
    assert "'=HYPERLINK(x).png," in (out / CSV_NAME).read_text()
    loaded = validate_manifest(out)
    assert images / "=HYPERLINK(x).png" in loaded.ood_paths
    for text in ("=1+2", "+1", "-x", "@SUM(A1)", "\tq", "\rq", "'=a", "''=a", "'plain", "plain"):
        assert unescape_cell(escape_cell(text)) == text


def test_empty_manifests_are_refused_up_front(tmp_path, images):
    out = write_manifest(tmp_path / "m", rows_for(images), meta_for(images))
    header = (out / CSV_NAME).read_text().splitlines()[0]
    for text, message in [
        ("", "manifest.csv is empty (0 bytes): no header and no rows"),
        (header + "\n", "manifest.csv has a header but no rows: nothing was reviewed"),
    ]:
        (out / CSV_NAME).write_text(text)
        with pytest.raises(ManifestError) as info:
            validate_manifest(out)
        assert info.value.problems == [message]


def test_a_utf8_byte_order_mark_is_read(tmp_path, images):
    out = write_manifest(tmp_path / "m", rows_for(images), meta_for(images))
    (out / CSV_NAME).write_bytes(codecs.BOM_UTF8 + (out / CSV_NAME).read_bytes())
    (out / META_NAME).write_bytes(codecs.BOM_UTF8 + (out / META_NAME).read_bytes())
    assert len(validate_manifest(out).ood_paths) == 2


def test_non_utf8_manifest_names_the_line(tmp_path, images):
    out = write_manifest(tmp_path / "m", rows_for(images), meta_for(images))
    lines = (out / CSV_NAME).read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"ana;ben", b"ana;b\xe9n")  # Latin-1 e-acute
    (out / CSV_NAME).write_bytes(b"\n".join(lines))
    column = lines[3].index(b"\xe9") + 1
    with pytest.raises(ManifestError) as info:
        validate_manifest(out)
    assert info.value.problems == [
        f"line 4: byte 0xe9 at column {column} is not UTF-8; save manifest.csv as UTF-8"
    ]


def test_a_repeated_header_column_is_one_error(tmp_path, images):
    out = write_manifest(tmp_path / "m", rows_for(images), meta_for(images))
    corrupt(out, lambda lines: lines.__setitem__(0, lines[0] + ",path"))
    with pytest.raises(ManifestError) as info:
        validate_manifest(out)
    assert info.value.problems == ["line 1: the header names column(s) ['path'] more than once"]


def test_a_text_file_named_like_an_image_is_refused_at_validation(tmp_path, images):
    rows = rows_for(images)
    (images / "rails/a.png").write_text("not an image at all\n")
    rows.loc[0, "sha256"] = hashlib.sha256((images / "rails/a.png").read_bytes()).hexdigest()
    out = write_manifest(tmp_path / "m", rows, meta_for(images))
    line = dict(zip(*[validate_manifest(out, check_files=False).rows[c] for c in ("path", "line")]))
    with pytest.raises(ManifestError) as info:
        validate_manifest(out)
    assert info.value.problems == [
        f"line {line['rails/a.png']} (rails/a.png): not a usable image (not_an_image: "
        "the header is not a known image format)"
    ]
    listing = tmp_path / "ood_list.txt"
    listing.write_text("rails/a.png\nrails/d.png\n")
    with pytest.raises(ManifestError, match=r"line 1 \(rails/a.png\): not a usable image"):
        load_ood_list(listing, image_root=images)


def test_ood_set_records_content_and_refuses_training_images(tmp_path, images):
    out = write_manifest(tmp_path / "m", rows_for(images), meta_for(images))
    ood = load_ood_set(out, expected_classes=CLASSES)
    record = ood.record()
    assert record["num_images"] == 2 and record["label_policy"] == "majority"
    assert record["provenance"]["mining"] == {"pool": "test", "score_threshold": 0.5}
    assert record["provenance"]["scoring_checkpoint_sha256"] == "ab" * 32
    before = record["content_sha256"]
    corrupt(out, lambda lines: lines.__setitem__(-1, lines[-1]))  # same bytes: same hash
    assert load_ood_set(out).content_sha256 == before
    write_manifest(out, rows_for(images).iloc[:4], meta_for(images), force=True)
    assert load_ood_set(out).content_sha256 != before
    # a training image behind a symlink (or a copy) is the same content: refused, named
    training = tmp_path / "voc" / "JPEGImages"
    training.mkdir(parents=True)
    (training / "img7.png").write_bytes((images / "rails/d.png").read_bytes())
    (training / "other.png").write_bytes((images / "sky/c.png").read_bytes()[:-1] + b"x")
    (images / "link.png").symlink_to(training / "img7.png")
    listing = tmp_path / "ood_list.txt"
    listing.write_text("rails/a.png\nlink.png\n")
    with pytest.raises(ManifestError) as info:
        load_ood_set(listing, images, training_images=sorted(training.iterdir()))
    assert info.value.problems == [
        f"line 2 ({images / 'link.png'}): the same image as training image "
        f"{training / 'img7.png'}; a hard OoD must not be an in-distribution training image "
        "(drop the row, or the image from the training split)"
    ]
    with pytest.raises(ManifestError, match=r"line \d+ \(.*rails/d.png\): the same image as"):
        load_ood_set(out, training_images=[training / "img7.png"])
