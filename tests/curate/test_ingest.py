"""Ingest: pool sources, content hashing, exact duplicates, tag exclusion, unreadable files."""

from __future__ import annotations

import hashlib

import pytest
from curate_fixtures import jpeg_bytes, noise_image

from curate import store
from curate.ingest.pool_sources import (
    DEFAULT_TAG_MAP,
    PoolFile,
    TagTable,
    foreground_tags,
    iter_pool,
    load_tag_map,
    split_tags,
    tag_map_mids,
)
from curate.ingest.register import ingest_pool
from wood_train.data.voc import VOC_CLASSES
from wood_train.errors import DataError

VOC_FG = foreground_tags(["boat", "person", "sofa", "train"], load_tag_map())


def _rows(conn, sql, *params):
    return [dict(r) for r in conn.execute(sql, params)]


@pytest.fixture
def conn(tmp_path):
    with store.connect(store.open_store(tmp_path / "c.db")) as connection:
        yield connection


def test_directory_pool_is_recursive_sorted_and_skips_hidden_and_non_images(tmp_path):
    pool = tmp_path / "pool"
    (pool / "b" / "deep").mkdir(parents=True)
    (pool / ".cache").mkdir()
    for rel in ("b/deep/z.jpg", "a.png", "b/c.JPG", ".hidden.jpg", ".cache/x.jpg", "readme.txt"):
        (pool / rel).write_bytes(b"x")
    files = list(iter_pool(pool))
    assert [f.relpath for f in files] == ["a.png", "b/c.JPG", "b/deep/z.jpg"]
    assert all(f.root == pool.resolve() and f.tags is None for f in files)


def test_text_list_resolves_relative_paths_against_its_folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"x")
    elsewhere = tmp_path.parent / f"{tmp_path.name}_other.jpg"
    elsewhere.write_bytes(b"y")
    listing = tmp_path / "pool.txt"
    listing.write_text(f"# candidates\nimgs/a.jpg\n\n{elsewhere}\n")
    files = list(iter_pool(listing))
    assert [(f.root, f.relpath) for f in files] == [
        (tmp_path.resolve(), "imgs/a.jpg"),
        (elsewhere.parent.resolve(), elsewhere.name),
    ]


def test_csv_pool_reads_tags_with_either_separator(tmp_path):
    sheet = tmp_path / "pool.csv"
    sheet.write_text('path,tags\na.jpg,"Tree; Rail"\nb.jpg,"Sofa bed,Lamp"\nc.jpg,\n')
    files = list(iter_pool(sheet))
    assert [f.tags for f in files] == [("Tree", "Rail"), ("Sofa bed", "Lamp"), ()]
    assert split_tags(" Cat ;; Dog,") == ("Cat", "Dog")


def test_bad_pool_sources_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list(iter_pool(tmp_path / "nowhere"))
    sheet = tmp_path / "pool.csv"
    sheet.write_text("filename,labels\na.jpg,Cat\n")
    with pytest.raises(DataError, match="pool.csv.*no path column"):
        list(iter_pool(sheet))
    sheet.write_text("path\na.jpg\n\n,\n")
    with pytest.raises(ValueError, match="pool.csv, line 3: empty 'path'"):
        list(iter_pool(sheet))
    (tmp_path / "pool.json").write_text("{}")
    with pytest.raises(ValueError, match="pool.json: a pool source is"):
        list(iter_pool(tmp_path / "pool.json"))


def test_shipped_tag_map_covers_the_voc_classes():
    mapping = load_tag_map(DEFAULT_TAG_MAP)
    assert sorted(mapping) == sorted(VOC_CLASSES)
    mids = tag_map_mids(mapping)
    assert set(mids.values()) == set(VOC_CLASSES)  # every class named by at least one MID
    assert mids["/m/07jdr"] == "train" and mids["/m/01xq0k1"] == mids["/m/0cnyhnx"] == "cow"
    assert {"/m/01g317", "/m/04yx4", "/m/03bt1vf", "/m/01bl7v", "/m/05r655"} <= {
        m for m, c in mids.items() if c == "person"
    }  # Person, Man, Woman, Boy, Girl
    assert {"person", "man", "couch", "television"} <= set().union(*mapping.values())  # names
    assert VOC_FG["couch"] == "sofa" and VOC_FG["train"] == "train"


def test_exact_duplicates_are_stored_once_with_every_path(tmp_path, conn):
    pool = tmp_path / "pool"
    pool.mkdir()
    data = jpeg_bytes(noise_image(1))
    (pool / "a.jpg").write_bytes(data)
    (pool / "copy_of_a.jpg").write_bytes(data)
    (pool / "b.jpg").write_bytes(jpeg_bytes(noise_image(2)))
    report = ingest_pool(conn, iter_pool(pool), fg_tags={}, batch_size=2)
    assert report.counts["listed"] == 3
    assert report.counts["new_images"] == 2 and report.counts["duplicate_paths"] == 1
    sha = hashlib.sha256(data).hexdigest()
    paths = _rows(conn, "SELECT relpath FROM image_paths WHERE sha256 = ? ORDER BY relpath", sha)
    assert [p["relpath"] for p in paths] == ["a.jpg", "copy_of_a.jpg"]
    images = _rows(conn, "SELECT sha256, n_bytes, status FROM images WHERE sha256 = ?", sha)
    assert images == [{"sha256": sha, "n_bytes": len(data), "status": "ok"}]
    roots = _rows(conn, "SELECT path FROM roots")
    assert roots == [{"path": str(pool.resolve())}]


def test_rerun_does_not_rehash_unchanged_files_and_picks_up_edits(tmp_path, conn, monkeypatch):
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "a.jpg").write_bytes(jpeg_bytes(noise_image(1)))
    (pool / "b.jpg").write_bytes(jpeg_bytes(noise_image(2)))
    ingest_pool(conn, iter_pool(pool), fg_tags={})
    (pool / "b.jpg").write_bytes(jpeg_bytes(noise_image(3), quality=60))  # a new size
    hashed = []
    import curate.ingest.register as ingest_module

    real = ingest_module._hash_file
    monkeypatch.setattr(
        ingest_module, "_hash_file", lambda p, cap: hashed.append(p.name) or real(p, cap)
    )
    report = ingest_pool(conn, iter_pool(pool), fg_tags={})
    assert hashed == ["b.jpg"]
    assert report.counts["unchanged"] == 1 and report.counts["new_images"] == 1
    new_sha = hashlib.sha256((pool / "b.jpg").read_bytes()).hexdigest()
    row = _rows(conn, "SELECT sha256 FROM image_paths WHERE relpath = 'b.jpg'")
    assert row == [{"sha256": new_sha}]
    assert len(_rows(conn, "SELECT * FROM image_paths")) == 2


def test_tags_naming_a_foreground_class_exclude_the_image(tmp_path, conn):
    pool = tmp_path / "pool"
    for i, name in enumerate(("rails.jpg", "couch.jpg", "man.jpg", "sea.jpg")):
        (pool / name).parent.mkdir(exist_ok=True)
        (pool / name).write_bytes(jpeg_bytes(noise_image(10 + i)))
    sheet = tmp_path / "pool.csv"
    sheet.write_text(
        "path,tags\n"
        'pool/rails.jpg,"Rail transport;Gravel"\n'
        'pool/couch.jpg,"Couch,Lamp"\n'
        "pool/man.jpg,MAN\n"
        "pool/sea.jpg,Sea\n"
    )
    report = ingest_pool(conn, iter_pool(sheet), VOC_FG)
    assert report.counts["tag_excluded"] == 2
    rows = _rows(
        conn,
        "SELECT p.relpath, p.tags, i.status, i.bad_reason FROM image_paths p "
        "JOIN images i USING (sha256) ORDER BY p.relpath",
    )
    assert [(r["relpath"], r["status"], r["bad_reason"]) for r in rows] == [
        ("pool/couch.jpg", "bad", "tag_excluded"),
        ("pool/man.jpg", "bad", "tag_excluded"),
        ("pool/rails.jpg", "ok", None),
        ("pool/sea.jpg", "ok", None),
    ]
    assert rows[2]["tags"] == "Rail transport;Gravel"


def test_separate_tags_csv_excludes_content_already_ingested_untagged(tmp_path, conn):
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "0001a.jpg").write_bytes(jpeg_bytes(noise_image(1)))
    (pool / "0002b.jpg").write_bytes(jpeg_bytes(noise_image(2)))
    ingest_pool(conn, iter_pool(pool), VOC_FG)
    assert {r["status"] for r in _rows(conn, "SELECT status FROM images")} == {"ok"}
    labels = tmp_path / "labels.csv"  # OpenImages style: one row per label, keyed by ImageID
    labels.write_text("ImageID,LabelName\n0001a,Tree\n0001a,Boat\n0002b,Tree\n")
    table = TagTable(labels)
    assert table.lookup(PoolFile(pool, "0001a.jpg")) == ("Boat", "Tree")
    report = ingest_pool(conn, iter_pool(pool), VOC_FG, tag_sources=[table])
    assert report.counts["tag_excluded"] == 1 and report.counts["unchanged"] == 2
    rows = _rows(conn, "SELECT p.relpath, i.status FROM image_paths p JOIN images i USING (sha256)")
    assert sorted((r["relpath"], r["status"]) for r in rows) == [
        ("0001a.jpg", "bad"),
        ("0002b.jpg", "ok"),
    ]


def test_empty_and_missing_files_are_recorded_not_fatal(tmp_path, conn):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "also_empty.jpg").write_bytes(b"")
    (tmp_path / "fine.jpg").write_bytes(jpeg_bytes(noise_image(1)))
    listing = tmp_path / "pool.txt"
    listing.write_text("empty.jpg\nalso_empty.jpg\ngone.jpg\nfine.jpg\n")
    report = ingest_pool(conn, iter_pool(listing), fg_tags={})
    assert report.counts["missing_file"] == 1
    assert report.problems == [f"{tmp_path.resolve() / 'gone.jpg'} (missing file)"]
    rows = _rows(conn, "SELECT status, bad_reason, n_bytes FROM images ORDER BY n_bytes")
    assert [(r["status"], r["bad_reason"]) for r in rows] == [("bad", "empty_file"), ("ok", None)]
    assert len(_rows(conn, "SELECT * FROM image_paths")) == 3
    assert "1 not read (missing file 1)" in report.summary()
