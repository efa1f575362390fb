"""OpenImages' label files read as published: MIDs, Confidence 0, machine thresholds, hierarchy."""

import json

import pytest

from curate.ingest.openimages import (
    is_image_label_file,
    read_class_descriptions,
    read_label_hierarchy,
    scan_label_files,
    with_descendants,
)
from tests.curate.openimages_fixtures import (
    EXPECTED,
    IMAGES,
    MID,
    UNKNOWN_MID,
    VOC_MIDS,
    write_class_descriptions,
    write_hierarchy,
    write_label_files,
)
from wood_train.errors import DataError


@pytest.fixture
def published(tmp_path):
    human, machine = write_label_files(tmp_path / "labels")
    boxable, v7 = write_class_descriptions(tmp_path / "labels")
    hierarchy = write_hierarchy(tmp_path / "labels")
    return human, machine, boxable, v7, hierarchy


def _voc_mid_class(hierarchy=None):
    mid_class = {MID[name]: voc for voc, names in VOC_MIDS.items() for name in names}
    return with_descendants(mid_class, read_label_hierarchy(hierarchy)) if hierarchy else mid_class


def _excluded(scan, mid_class):
    return {image: mid_class[mids[0]] for image, mids in scan.present.items()}


def test_each_planted_label_decides_as_published(published):
    human, machine, boxable, _, hierarchy = published
    mid_class = _voc_mid_class(hierarchy)
    scan = scan_label_files(
        [human, machine], mid_class, known_mids=read_class_descriptions(boxable)
    )
    excluded = _excluded(scan, mid_class)
    for image, (voc_class, why) in EXPECTED.items():
        assert excluded.get(image) == voc_class, why
    assert scan.counts["verified_absent"] == 3  # Train, Boat, Kitchen & dining room table
    assert scan.counts["machine_below_threshold"] == 1  # Boat 0.3
    assert scan.counts["machine_overruled"] == 1  # Boat 0.9 under a human "absent"


def test_without_the_hierarchy_descendants_stay_in(published):
    human, machine, *_ = published
    mid_class = _voc_mid_class()
    excluded = _excluded(scan_label_files([human, machine], mid_class), mid_class)
    assert excluded == {"000002b66c9c498e": "train", "0000048549557964": "boat"}


def test_the_threshold_is_a_flag(published):
    human, machine, *_ = published
    mid_class = _voc_mid_class()
    scan = scan_label_files([human, machine], mid_class, min_confidence=0.3)
    assert "000002c707c9895e" in scan.present  # machine Boat 0.3 now counts
    assert "000004f4400f6ec5" not in scan.present  # a human "absent" still wins
    with pytest.raises(DataError, match="min-tag-confidence"):
        scan_label_files([human], mid_class, min_confidence=0.0)


def test_a_human_row_overrules_the_machine_only_when_its_file_is_given(published):
    human, machine, *_ = published
    mid_class = _voc_mid_class()
    alone = scan_label_files([machine], mid_class).present
    assert set(alone) == {"0000048549557964", "000004f4400f6ec5"}  # both machine Boats >= 0.5
    assert "000004f4400f6ec5" not in scan_label_files([machine, human], mid_class).present


def test_one_concatenated_file_equals_two_files(published, tmp_path):
    human, machine, *_ = published
    both = tmp_path / "both.csv"
    both.write_text(human.read_text() + "".join(machine.read_text().splitlines(True)[1:]))
    mid_class = _voc_mid_class()
    assert (
        scan_label_files([both], mid_class).present
        == scan_label_files([machine, human], mid_class).present
    )


def test_both_description_shapes_read_the_same(published):
    _, _, boxable, v7, _ = published
    names = read_class_descriptions(boxable)
    assert names == read_class_descriptions(v7)
    assert names[MID["Train"]] == "Train"
    assert names[MID["Kitchen & dining room table"]] == "Kitchen & dining room table"


def test_unknown_mid_is_counted_and_reported_not_fatal(published):
    human, machine, boxable, _, _ = published
    scan = scan_label_files(
        [human, machine], _voc_mid_class(), known_mids=read_class_descriptions(boxable)
    )
    assert scan.counts["unknown_rows"] == 1
    assert scan.unknown_mids == {UNKNOWN_MID: 1}
    assert f"{UNKNOWN_MID} (1)" in scan.summary()


def test_only_pool_images_are_kept_when_their_ids_are_given(published):
    human, machine, *_ = published
    scan = scan_label_files([human, machine], _voc_mid_class(), image_ids=["000002b66c9c498e"])
    assert scan.present == {"000002b66c9c498e": (MID["Train"],)}
    assert scan.counts["rows"] == sum(len(h) + len(m) for h, m in IMAGES.values())


def test_bad_rows_and_files_are_named(published, tmp_path):
    human, *_ = published
    broken = tmp_path / "broken.csv"
    lines = human.read_text().splitlines(True)
    lines[2] = lines[2].replace(",0\n", ",zero\n")  # the Train "absent" row, line 3
    broken.write_text("".join(lines))
    with pytest.raises(DataError, match=r"broken.csv, line 3: Confidence 'zero'"):
        scan_label_files([broken], _voc_mid_class())
    other = tmp_path / "tags.csv"
    other.write_text("path,tags\na.jpg,Train\n")
    assert not is_image_label_file(other) and is_image_label_file(human)
    with pytest.raises(DataError, match="no column"):
        scan_label_files([other], _voc_mid_class())
    with pytest.raises(DataError, match="line 1: expected 'MID,DisplayName'"):
        read_class_descriptions(other)


def test_hierarchy_follows_subcategories_not_parts(published):
    *_, hierarchy = published
    children = read_label_hierarchy(hierarchy)
    extended = with_descendants({MID["Car"]: "car", MID["Vehicle"]: "vehicle"}, children)
    assert extended[MID["Limousine"]] == extended[MID["Van"]] == "car"  # nearest class wins
    assert extended[MID["Taxi"]] == "vehicle"  # Taxi is Car's sibling in the published file
    assert MID["Wheel"] not in extended  # a Part, never a Subcategory


def test_hardood_mine_reads_the_published_files(published, tmp_path, tmp_path_factory, capsys):
    """The README's `mine` command on the format fixtures: two --tags-csv, both side files."""
    from curate_fixtures import CLASS_NAMES, cached_planted_checkpoint, noise_image, save_image

    from app.cli import main
    from curate import store

    human, machine, _, v7, hierarchy = published
    pool = tmp_path / "openimages" / "train"
    for seed, image in enumerate(IMAGES):  # OpenImages' downloader names files <ImageID>.jpg
        save_image(noise_image(seed), pool / f"{image}.jpg")
    db = tmp_path / "openimages.db"
    checkpoint = cached_planted_checkpoint(tmp_path_factory)
    argv = ["mine", "--preset", "world", "--db", str(db), "--checkpoint", str(checkpoint),
            "--pool", str(pool), "--tags-csv", str(human), "--tags-csv", str(machine),
            "--class-descriptions", str(v7), "--label-hierarchy", str(hierarchy),
            "--workers", "0", "--image-size", "32"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    expected = {i: c for i, (c, _) in EXPECTED.items() if c in CLASS_NAMES}  # train, boat, bird
    with store.connect(db) as conn:
        rows = conn.execute(
            "SELECT p.relpath, i.status, i.bad_reason FROM images i JOIN image_paths p USING (sha256)"
        ).fetchall()
        config = json.loads(conn.execute("SELECT config_json FROM runs").fetchone()[0])
    excluded = {
        r["relpath"].removesuffix(".jpg") for r in rows if r["bad_reason"] == "tag_excluded"
    }
    assert excluded == set(expected)
    assert config["tags_csv"] == [str(human), str(machine)]  # both kept, in order
    assert f"{UNKNOWN_MID} (1)" in out  # counted and reported, not fatal
    assert "tag-excluded per class: boat 2, bird 1, train 1" in out
