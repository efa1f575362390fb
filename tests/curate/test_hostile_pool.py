"""A pool may contain anything: FIFOs, devices, huge files, odd names, links out of the root.

Each planted file has a known fate; ingest and scoring run in a forked child with a deadline and
a memory ceiling, so a regression fails the test (hang, or read without end) instead of hanging or
exhausting the machine.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from curate_fixtures import cached_planted_checkpoint, cue_image, noise_image, save_image
from PIL import Image

from curate import store
from curate.ingest import image_files
from curate.ingest.pool_sources import iter_pool
from curate.ingest.register import ingest_pool
from curate.mine import mine
from curate.mine_config import MineConfig
from curate.queue.build import queue_frame
from curate.score.scoring import Scorer, score_pool
from wood_train.model.checkpoint import load_cam_net

NON_UTF8 = b"caf\xe9.jpg"  # Latin-1 "café.jpg", common on old disks and in tar archives
DEADLINE_S = 60
HEADROOM_BYTES = 768 * 2**20


def _bounded(fn, *args, **kwargs):
    """Run ``fn`` in a forked child that may grow by HEADROOM_BYTES and live DEADLINE_S."""

    def child():
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        vm = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (vm + HEADROOM_BYTES, hard))
        fn(*args, **kwargs)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(DEADLINE_S)
    if process.is_alive():
        process.kill()
        process.join()
        pytest.fail(f"{fn.__name__} did not finish within {DEADLINE_S} s (blocked on a read?)")
    assert process.exitcode == 0, f"{fn.__name__} failed in the child (exit {process.exitcode})"


def _ingest(db, pool, **options):
    with store.connect(db) as conn:
        report = ingest_pool(conn, iter_pool(pool), fg_tags={}, **options)
    Path(db).with_suffix(".report").write_text(repr((dict(report.counts), report.problems)))


def _report(db):
    return eval(Path(db).with_suffix(".report").read_text())  # written by _ingest above


@pytest.fixture
def db(tmp_path):
    return store.open_store(tmp_path / "c.db")


def _paths(db):
    with store.connect(db) as conn:
        rows = conn.execute(
            "SELECT r.path, p.relpath FROM image_paths p JOIN roots r USING (root_id)"
        )
        return {(store.path_text(r["path"]), store.path_text(r["relpath"])) for r in rows}


def test_special_files_and_huge_files_are_refused_before_reading(tmp_path, db):
    pool = tmp_path / "pool"
    save_image(noise_image(1), pool / "good.png")
    os.mkfifo(pool / "x.jpg")  # a FIFO: a plain open() blocks until a writer comes
    (pool / "zero.jpg").symlink_to("/dev/zero")  # reads without end
    with open(pool / "sparse.jpg", "wb") as f:  # 300 MB on paper, no disk used
        f.truncate(300 * 2**20)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(pool / "sock.jpg"))
    try:
        _bounded(_ingest, db, pool)
        followed = store.open_store(tmp_path / "followed.db")  # /dev/zero reached on purpose
        _bounded(_ingest, followed, pool, follow_symlinks=True)
    finally:
        server.close()
    counts, problems = _report(db)
    assert counts["listed"] == 5 and counts["new_images"] == 1
    assert _reasons(problems) == {
        "x.jpg": "not regular file: a FIFO",
        "zero.jpg": "outside pool root",
        "sock.jpg": "not regular file: a socket",
        "sparse.jpg": "file too large: 314572800 bytes > --max-file-mb 256",
    }
    assert {rel for _, rel in _paths(db)} == {"good.png"}
    counts, problems = _report(followed)
    assert _reasons(problems)["zero"] == "not regular file: a character device"
    assert counts["new_images"] == 1
    assert {root for root, _ in _paths(followed)} == {str(pool.resolve())}
    with store.connect(followed) as conn:  # /dev never becomes a root the app would serve from
        roots = [store.path_text(r[0]) for r in conn.execute("SELECT path FROM roots")]
    assert roots == [str(pool.resolve())]


def _png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _reasons(problems: list[str]) -> dict[str, str]:
    """'/pool/x.jpg (not regular file: a FIFO)' -> {'x.jpg': 'not regular file: a FIFO'}."""
    out = {}
    for line in problems:
        path, reason = line.split(" (", 1)
        out[path.rsplit("/", 1)[1]] = reason.removesuffix(")")
    return out


def test_size_cap_is_a_flag(tmp_path, db):
    pool = tmp_path / "pool"
    small, big = save_image(noise_image(1, 16), pool / "small.png"), pool / "big.png"
    save_image(noise_image(2, 256), big)
    cap = (small.stat().st_size + big.stat().st_size) // 2
    _bounded(_ingest, db, pool, max_file_bytes=cap)
    counts, problems = _report(db)
    assert counts["file_too_large"] == 1 and counts["new_images"] == 1
    assert "big.png (file too large" in problems[0]


def _score(db, checkpoint, size=32):
    model, meta = load_cam_net(checkpoint)
    scorer = Scorer(model, meta["weights_sha256"], meta["class_names"], size, torch.device("cpu"))
    with store.connect(db) as conn:
        run_id = store.start_run(conn, "mine", {})
        report = score_pool(conn, scorer, run_id, batch_size=4, workers=0)
        store.finish_run(conn, run_id, "done")
    return report


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return cached_planted_checkpoint(tmp_path_factory)


def test_a_name_that_is_not_utf8_is_kept_losslessly_and_never_stops_a_run(
    tmp_path, checkpoint, capsys
):
    pool = tmp_path / "pool"
    save_image(cue_image(0, 1), pool / "a.png")
    save_image(cue_image(1, 2), pool / "z.png")
    odd = os.fsencode(pool) + b"/" + NON_UTF8  # a bytes path: the name is not text
    with open(odd, "wb") as f:
        f.write(_png_bytes(cue_image(2, 3)))
    config = MineConfig(db=tmp_path / "c.db", checkpoint=checkpoint, pool=(str(pool),),
                        batch_size=4, workers=0, dup_threshold=0.9999, clusters_per_class=2)  # fmt: skip
    result = mine(config)  # the log goes to stdout, which is UTF-8: a lone surrogate would raise
    assert result.counts["ingest_new_images"] == 3 and result.counts["score_scored"] == 3
    with store.connect(result.db) as conn:
        stored = conn.execute("SELECT relpath, sha256 FROM image_paths").fetchall()
        assert [r["relpath"] for r in stored if isinstance(r["relpath"], bytes)] == [NON_UTF8]
        sha = next(r["sha256"] for r in stored if r["relpath"] == NON_UTF8)
        data, path = image_files.read_image_bytes(conn, sha)  # read back, as the app does
        assert os.fsencode(path).endswith(NON_UTF8) and data == Path(os.fsdecode(odd)).read_bytes()
        shown = queue_frame(conn)["path"].tolist()
    assert any(p.endswith("/caf\\xe9.jpg") for p in shown), shown  # readable in the queue
    print("\n".join(shown))
    assert "caf\\xe9.jpg" in capsys.readouterr().out


def test_links_out_of_the_root_are_refused_unless_followed(tmp_path, db, checkpoint):
    pool, outside = tmp_path / "pool", tmp_path / "elsewhere"
    save_image(cue_image(0, 1), pool / "inside.png")
    save_image(cue_image(1, 2), outside / "secret.png")
    (pool / "link.png").symlink_to(outside / "secret.png")
    _bounded(_ingest, db, pool)
    counts, problems = _report(db)
    assert counts["outside_pool_root"] == 1 and counts["new_images"] == 1
    assert problems == [f"{pool.resolve() / 'link.png'} (outside pool root)"]

    followed = store.open_store(tmp_path / "followed.db")
    _bounded(_ingest, followed, pool, follow_symlinks=True)
    counts, _ = _report(followed)
    assert counts["followed_symlinks"] == 1 and counts["new_images"] == 2
    assert (str(outside.resolve()), "secret.png") in _paths(followed)  # under its own root
    with store.connect(followed) as conn:  # so the app, which serves registered roots, shows it
        sha = conn.execute("SELECT sha256 FROM image_paths WHERE relpath = 'secret.png'").fetchone()
        assert image_files.read_image_bytes(conn, sha[0])[1] == (outside / "secret.png").resolve()


def test_scoring_applies_the_containment_rule_again(tmp_path, db, checkpoint):
    """A link that pointed inside at ingest and out of the root by scoring time is not scored."""
    pool, outside = tmp_path / "pool", tmp_path / "elsewhere"
    target = save_image(cue_image(0, 1), pool / ".hidden" / "real.png")  # hidden: not listed
    save_image(cue_image(1, 2), pool / "plain.png")
    (pool / "link.png").symlink_to(target)
    _bounded(_ingest, db, pool)
    assert _report(db)[0]["new_images"] == 2
    copy = outside / "copy.png"  # the same bytes, so only the containment rule can catch it
    copy.parent.mkdir()
    copy.write_bytes(target.read_bytes())
    (pool / "link.png").unlink()
    (pool / "link.png").symlink_to(copy)
    report = _score(db, checkpoint)
    assert report.counts["scored"] == 1 and report.counts["skipped:outside_pool_root"] == 1
    with store.connect(db) as conn:
        link_sha = conn.execute(
            "SELECT sha256 FROM image_paths WHERE relpath = 'link.png'"
        ).fetchone()[0]
        assert conn.execute("SELECT COUNT(*) FROM scores WHERE sha256 = ?", (link_sha,)).fetchone()[0] == 0  # fmt: skip


def test_a_root_resolved_once_gives_the_same_answers_and_stays_where_it_was_resolved(tmp_path):
    real, other = tmp_path / "real", tmp_path / "other"
    save_image(cue_image(0, 1), real / "a.png")
    save_image(cue_image(1, 2), other / "a.png")
    (real / "out.png").symlink_to(other / "a.png")
    root = tmp_path / "pool"
    root.symlink_to(real)
    resolved = image_files.resolve_root(root)
    assert resolved == (real.resolve(), None)
    for rel in ("a.png", "out.png", "gone.png", "../other/a.png", "/etc/passwd", ".", "a\x00.png"):
        assert image_files.locate_in_root(root, rel, resolved) == image_files.locate_in_root(
            root, rel
        ), rel
    assert image_files.resolve_root("relative/root") == (None, image_files.BAD_PATH)
    assert image_files.resolve_root(tmp_path / "missing") == (None, image_files.MISSING)
    # the root link now leads elsewhere: a lookup with the root resolved before stays inside it
    root.unlink()
    root.symlink_to(other)
    assert image_files.locate_in_root(root, "a.png", resolved) == ((real / "a.png").resolve(), None)
    assert image_files.locate_in_root(root, "a.png") == ((other / "a.png").resolve(), None)


def test_a_file_is_read_whole_up_to_the_cap_whatever_its_stated_size(tmp_path):
    """read_pool_file asks for the size fstat gives plus one byte, and reads on when there is
    more: a procfs file states 0 bytes and still has content; the cap still holds."""
    data = bytes(range(256)) * 40
    (tmp_path / "a.bin").write_bytes(data)
    assert image_files.read_pool_file(tmp_path / "a.bin", len(data)) == data
    with pytest.raises(image_files.RefusedFile, match="file too large"):
        image_files.read_pool_file(tmp_path / "a.bin", len(data) - 1)
    stated_empty = Path("/proc/self/status")
    if not stated_empty.is_file() or stated_empty.stat().st_size != 0:
        pytest.skip("needs a procfs file that states 0 bytes (Linux)")
    assert image_files.read_pool_file(stated_empty, 2**20).startswith(b"Name:")
    with pytest.raises(image_files.RefusedFile, match="grew past"):
        image_files.read_pool_file(stated_empty, 8)


_RUNNER = """
import sys, time
from curate import store
with store.connect(sys.argv[1]) as conn:
    print(store.start_run(conn, "mine", {}), flush=True)
    time.sleep(600)
"""


def _start_holder(db) -> tuple[subprocess.Popen, int]:
    repo = Path(__file__).resolve().parents[2]
    holder = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, str(db)], cwd=repo, stdout=subprocess.PIPE, text=True
    )
    return holder, int(holder.stdout.readline())


def _status(db, run_id):
    with store.connect(db) as conn:
        return conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]


def test_runs_killed_with_sigkill_are_marked_interrupted_by_the_next_command(db):
    killed, killed_run = _start_holder(db)
    alive, alive_run = _start_holder(db)
    try:
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        assert _status(db, killed_run) == "running"  # nothing ran on the store since
        store.open_store(db)  # the next command
        assert _status(db, killed_run) == "interrupted"
        assert _status(db, alive_run) == "running"  # its process still holds it
        with store.connect(db) as conn:  # a reused pid is told apart by its start time
            conn.execute(
                "UPDATE runs SET pid = ?, process_started = 'another boot:0' WHERE run_id = ?",
                (os.getpid(), alive_run),
            )
            run_id = store.start_run(conn, "export", {})
        assert _status(db, alive_run) == "interrupted" and _status(db, run_id) == "running"
    finally:
        for process in (killed, alive):
            process.kill()
            process.wait()


def test_a_list_file_may_name_files_in_any_encoding(tmp_path, db):
    pool = tmp_path / "pool"
    save_image(noise_image(1), pool / "plain.png")
    with open(os.fsencode(pool) + b"/" + NON_UTF8, "wb") as f:
        f.write(_png_bytes(noise_image(2)))
    listing = pool / "list.txt"
    listing.write_bytes(b"plain.png\n" + NON_UTF8 + b"\n")  # a Latin-1 list, as old tools write
    _bounded(_ingest, db, listing)
    counts, problems = _report(db)
    assert counts["new_images"] == 2 and problems == []
    assert {rel for _, rel in _paths(db)} == {"plain.png", os.fsdecode(NON_UTF8)}
