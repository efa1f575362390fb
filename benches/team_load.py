"""A team on the review store: 50 annotators at human pace on a 1,000,000-item queue.

    .venv/bin/python benches/team_load.py [--items 1000000] [--annotators 50] [--minutes 5]
        [--overlaps 1 2] [--processes 5] [--lease-seconds 60] [--hammer 1 4 8 16]

Builds (once, then reuses) a store whose queue holds ``--items`` synthetic items with real store
rows (images, scores, queue, and the open-items index the triggers fill), then, for each overlap:

- **Human pace.** ``--annotators`` simulated annotators (threads spread over ``--processes``
  processes, each with its own connection, as app servers have) work the queue through the review
  API for ``--minutes``: half their pages are grids of 12, half single items; each verdict takes
  1-3 s; while a page is open the annotator renews its leases every third of the lease; one page
  in 20 is left open past its lease without renewal (a coffee break), so stale submits happen.
  Latency is measured around each API call: a lease (``lease_next`` or ``renew_leases``) and a
  verdict commit (``submit_verdicts`` of the page). Targets: p99 lease < 200 ms and p99 verdict
  commit < 200 ms.
- **Checks.** Lost verdicts: every verdict an annotator was told was recorded is live in the store,
  and the store holds no other. Over-counted items: no item has more than ``k`` live votes.
  Double leases: from each annotator's log, the span in which it surely held an item (from the
  lease call's return to the earliest of its submit and the lease's earliest possible expiry);
  two annotators' spans on one item that overlap are a double lease.
- **Hammering.** ``--hammer`` workers (one process each) lease a grid page and submit it with no
  pause, for ``--hammer-seconds``; the table gives the sustained verdicts and transactions per
  second and the latencies at each level. The highest rate is the store's maximum.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from curate import store  # noqa: E402
from curate.review import annotators, leases, verdicts  # noqa: E402

CLASSES = ["aeroplane", "boat", "train", "sheep"]
CHUNK = 50_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return (
        ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")
    )


def build_store(path: Path, n_items: int) -> Path:
    """A store whose queue ranks ``n_items`` synthetic items 1..n (built once, then reused)."""
    if path.is_file():
        with store.connect(path) as conn:
            if conn.execute("SELECT COUNT(*) FROM queue").fetchone()[0] == n_items:
                return path
        store.delete_store(path)
    started = time.perf_counter()
    db = store.open_store(path)
    with store.connect(db) as conn:
        # a large page cache: the sha256-keyed indexes take inserts in random order
        conn.execute("PRAGMA cache_size = -1000000")
        run_id = store.start_run(conn, "queue", {"bench": "team_load"}, "c" * 64, "bench")
        with store.transaction(conn):
            store.ensure_classes(conn, CLASSES)
        probs = store.encode_probs([0.9, 0.3, 0.1, 0.01])
        for start in range(0, n_items, CHUNK):
            shas = [hashlib.sha256(f"item {i}".encode()).hexdigest()
                    for i in range(start, min(n_items, start + CHUNK))]  # fmt: skip
            with store.transaction(conn):
                conn.executemany(
                    "INSERT INTO images(sha256, width, height, n_bytes, status, added_run) "
                    "VALUES (?, 64, 64, 1000, 'ok', ?)",
                    [(sha, run_id) for sha in shas],
                )
                conn.executemany(
                    "INSERT INTO scores(sha256, checkpoint_sha256, run_id, probs, top_class, "
                    "top_score, hardness_score) VALUES (?, ?, ?, ?, 0, 0.9, 0.9)",
                    [(sha, "c" * 64, run_id, probs) for sha in shas],
                )
                conn.executemany(
                    "INSERT INTO queue(sha256, rank, run_id, top_class, hardness_score, reason) "
                    "VALUES (?, ?, ?, 0, 0.9, 'sky scores aeroplane 0.90')",
                    [(sha, start + i + 1, run_id) for i, sha in enumerate(shas)],
                )
            print(f"  store: {start + len(shas):,} / {n_items:,} items", end="\r", flush=True)
        store.finish_run(conn, run_id, "done", {"queued": n_items})
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(f"  store: {n_items:,} items built in {time.perf_counter() - started:.0f} s")
    return db


class Log:
    """What one annotator saw and did, with wall-clock times (shared clock across processes)."""

    def __init__(self) -> None:
        self.lease_ms: list[float] = []
        self.verdict_ms: list[float] = []
        self.events: list[tuple] = []  # (kind, annotator, sha, t_start, t_end)
        self.recorded: list[tuple[str, str, int]] = []
        self.refused = 0
        self.pages = {1: 0, 12: 0}


def _annotator(db, name, k, lease_s, deadline, seed, log: Log, lock: threading.Lock) -> None:
    rng = random.Random(seed)
    with store.connect(db) as conn:
        annotators.sign_in(conn, name)
        while time.time() < deadline:
            n = 12 if rng.random() < 0.5 else 1
            t_start, clock = time.time(), time.perf_counter()
            page = leases.lease_next(conn, name, k=k, lease_seconds=lease_s, n=n)
            lease_ms, t_end = (time.perf_counter() - clock) * 1000, time.time()
            if not page:
                break
            shas = [i.sha256 for i in page]
            events = [("lease", name, sha, t_start, t_end) for sha in shas]
            coffee = rng.random() < 0.05  # left open past the lease, without renewal
            think = lease_s * 1.3 if coffee else sum(rng.uniform(1.0, 3.0) for _ in shas)
            done_at, renews = time.time() + think, []
            while (left := done_at - time.time()) > 0:
                time.sleep(min(left, lease_s / 3))
                if not coffee and time.time() < done_at:
                    t_start, clock = time.time(), time.perf_counter()
                    held = leases.renew_leases(conn, name, shas, lease_s, k=k)
                    renews.append((time.perf_counter() - clock) * 1000)
                    events += [("renew", name, sha, t_start, time.time()) for sha in held]
            given = [(sha, rng.choice(["no_foreground", "contains_foreground"]), 2.0)
                     for sha in shas]  # fmt: skip
            t_start, clock = time.time(), time.perf_counter()
            result = verdicts.submit_verdicts(conn, name, given, k=k)
            verdict_ms = (time.perf_counter() - clock) * 1000
            events += [("submit", name, sha, t_start, time.time()) for sha in shas]
            with lock:
                log.lease_ms += [lease_ms, *renews]
                log.verdict_ms.append(verdict_ms)
                log.events += events
                log.recorded += [(name, sha, vid) for sha, vid in result.recorded]
                log.refused += len(result.refused)
                log.pages[n] += 1


def _team_process(db, names, k, lease_s, deadline, out) -> None:
    log, lock = Log(), threading.Lock()
    threads = [
        threading.Thread(target=_annotator, args=(db, name, k, lease_s, deadline, name, log, lock))
        for name in names
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put(log.__dict__)


def double_leases(events: list[tuple], lease_s: float) -> int:
    """Pairs of annotators whose sure holding spans of one item overlap (see the docstring)."""
    spans: dict[str, list[tuple[float, float, str]]] = {}
    current: dict[tuple[str, str], list[float]] = {}
    for kind, name, sha, t_start, t_end in sorted(events, key=lambda e: (e[3], e[4])):
        key = (name, sha)
        if kind == "lease":
            if key in current:
                spans.setdefault(sha, []).append((*current.pop(key), name))
            current[key] = [t_end, t_start + lease_s]  # surely held from return to earliest expiry
        elif kind == "renew" and key in current:
            current[key][1] = max(current[key][1], t_start + lease_s)
        elif kind == "submit" and key in current:
            start, end = current.pop(key)
            spans.setdefault(sha, []).append((start, min(end, t_start), name))
    for (name, sha), (start, end) in current.items():
        spans.setdefault(sha, []).append((start, end, name))
    doubles = 0
    for item in spans.values():
        for i, (s1, e1, a) in enumerate(item):
            doubles += sum(1 for s2, e2, b in item[i + 1 :] if a != b and max(s1, s2) < min(e1, e2))
    return doubles


def human_pace(base: Path, work: Path, k: int, args) -> dict:
    db = work / f"team_k{k}.db"
    store.delete_store(db)
    shutil.copy(base, db)
    names = [f"annotator {i:02d}" for i in range(args.annotators)]
    groups = [names[i :: args.processes] for i in range(args.processes)]
    deadline = time.time() + args.minutes * 60
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    out = context.Queue()
    procs = [context.Process(target=_team_process, args=(db, g, k, args.lease_seconds, deadline, out))
             for g in groups if g]  # fmt: skip
    for proc in procs:
        proc.start()
    logs = [out.get(timeout=args.minutes * 60 + 600) for _ in procs]
    for proc in procs:
        proc.join()
    merged = Log()
    for log in logs:
        for key, value in log.items():
            if key == "pages":
                merged.pages = {n: merged.pages[n] + value[n] for n in merged.pages}
            else:
                setattr(merged, key, getattr(merged, key) + value)
    with store.connect(db) as conn:
        live = {tuple(r) for r in conn.execute(
            "SELECT annotator, sha256, verdict_id FROM verdicts WHERE undone = 0")}  # fmt: skip
        over = conn.execute(
            "SELECT COUNT(*) FROM (SELECT sha256 FROM verdicts WHERE undone = 0 AND gold_check = 0 "
            "GROUP BY sha256 HAVING COUNT(*) > ?)",
            (k,),
        ).fetchone()[0]
    told = set(merged.recorded)
    store.delete_store(db)
    return {
        "k": k, "verdicts": len(told), "pages": merged.pages, "leases": merged.lease_ms,
        "commits": merged.verdict_ms, "refused": merged.refused,
        "lost": len(told - live), "extra": len(live - told),
        "doubles": double_leases(merged.events, args.lease_seconds), "over": over,
    }  # fmt: skip


def _hammer_worker(db, name, seconds, out) -> None:
    lease_ms, commit_ms, n_verdicts = [], [], 0
    with store.connect(db) as conn:
        annotators.sign_in(conn, name)
        end = time.time() + seconds
        while time.time() < end:
            clock = time.perf_counter()
            page = leases.lease_next(conn, name, k=1, n=12)
            lease_ms.append((time.perf_counter() - clock) * 1000)
            clock = time.perf_counter()
            result = verdicts.submit_verdicts(
                conn, name, [(i.sha256, "no_foreground", 0.5) for i in page], k=1
            )
            commit_ms.append((time.perf_counter() - clock) * 1000)
            n_verdicts += len(result.recorded)
    out.put((lease_ms, commit_ms, n_verdicts))


def hammer(base: Path, work: Path, workers: int, seconds: float) -> dict:
    db = work / "hammer.db"
    if not db.is_file():
        shutil.copy(base, db)
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    out = context.Queue()
    procs = [context.Process(target=_hammer_worker, args=(db, f"hammer {i}", seconds, out))
             for i in range(workers)]  # fmt: skip
    for proc in procs:
        proc.start()
    results = [out.get(timeout=seconds + 600) for _ in procs]
    for proc in procs:
        proc.join()
    lease_ms = [v for r in results for v in r[0]]
    commit_ms = [v for r in results for v in r[1]]
    return {"workers": workers, "verdicts_per_s": sum(r[2] for r in results) / seconds,
            "tx_per_s": (len(lease_ms) + len(commit_ms)) / seconds,
            "lease": lease_ms, "commit": commit_ms}  # fmt: skip


def _ms(values: list[float]) -> str:
    return (f"{statistics.median(values):.1f} / {percentile(values, 0.99):.1f} / "
            f"{max(values):.0f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--overlaps", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--lease-seconds", type=float, default=60.0)
    parser.add_argument("--hammer", type=int, nargs="*", default=[1, 4, 8, 16])
    parser.add_argument("--hammer-seconds", type=float, default=20.0)
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "hardood-team-load")  # fmt: skip
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    base = build_store(args.workdir / f"queue_{args.items}.db", args.items)

    print(f"\nhuman pace: {args.annotators} annotators ({args.processes} processes), "
          f"{args.minutes:g} min per overlap, lease {args.lease_seconds:g} s, "
          f"{args.items:,}-item queue")  # fmt: skip
    print(
        "| overlap | verdicts | pages grid / single | lease calls | lease ms p50 / p99 / max "
        "| commits | commit ms p50 / p99 / max | refused (stale) | lost | double leases "
        "| over-counted |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k in args.overlaps:
        r = human_pace(base, args.workdir, k, args)
        print(f"| {k} | {r['verdicts']} | {r['pages'][12]} / {r['pages'][1]} | {len(r['leases'])} "
              f"| {_ms(r['leases'])} | {len(r['commits'])} | {_ms(r['commits'])} | {r['refused']} "
              f"| {r['lost'] + r['extra']} | {r['doubles']} | {r['over']} |", flush=True)  # fmt: skip

    if args.hammer:
        print(f"\nhammering: pages of 12 with no pause, overlap 1, {args.hammer_seconds:g} s each")
        print(
            "| workers | verdicts/s | transactions/s | lease ms p50 / p99 / max "
            "| commit ms p50 / p99 / max |"
        )
        print("|---|---|---|---|---|")
        store.delete_store(args.workdir / "hammer.db")
        for workers in args.hammer:
            r = hammer(base, args.workdir, workers, args.hammer_seconds)
            print(f"| {workers} | {r['verdicts_per_s']:.0f} | {r['tx_per_s']:.0f} "
                  f"| {_ms(r['lease'])} | {_ms(r['commit'])} |", flush=True)  # fmt: skip
        store.delete_store(args.workdir / "hammer.db")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
