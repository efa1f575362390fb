"""Images like a given one, and more candidates like the confirmed hard OoDs.

``hardood similar --db curation.db --like 3f2a9c01b7e4`` lists the pool images whose embeddings
are nearest to that image's (cosine similarity), with their scores and any verdict. ``--like``
takes what ``hardood queue`` prints: a sha256 prefix, a full path or a stored file name. An annotator who
confirmed a hard OoD (verdict ``no_foreground``) usually wants more of the same;
``expand_from_verdicts`` finds the nearest images nobody has seen yet.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from curate import store
from curate.mine_config import DEFAULT_EMBEDDER
from curate.neighbours.approximate_index import APPROXIMATE_FROM, nearest_rows
from curate.neighbours.near_pairs import unit_rows
from curate.neighbours.vector_index import EmbeddingFile, build_index
from wood_train.errors import ConfigError, DataError, MissingInputError

MIN_PREFIX = 4
_HEX = re.compile(r"^[0-9a-f]+$")
_SQL_CHUNK = 500


def resolve_embedder(conn: sqlite3.Connection, embedder: str) -> str:
    """The stored embedder named ``embedder``, or the one it prefixes.

    ``"classifier"`` matches ``classifier-<checkpoint hash>``; when several checkpoints have
    embeddings, the one of the most recent run wins.
    """
    names = [r[0] for r in conn.execute("SELECT DISTINCT embedder FROM embeddings")]
    if embedder in names:
        return embedder
    matches = sorted(n for n in names if n.startswith(embedder))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        known = ", ".join(sorted(names)) or "none yet"
        raise DataError(
            f"no {embedder!r} embeddings in the store (stored embedders: {known}); "
            "run `hardood mine` first"
        )
    for row in conn.execute(
        "SELECT checkpoint_sha256 FROM runs WHERE checkpoint_sha256 IS NOT NULL "
        "ORDER BY run_id DESC"
    ):
        latest = [m for m in matches if m.endswith(row[0][:12])]
        if latest:
            return latest[0]
    raise ConfigError(f"{embedder!r} matches several embedders ({', '.join(matches)}); name one")


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_image(conn: sqlite3.Connection, like: str) -> str:
    """The sha256 of the image ``like`` names.

    ``like`` is what ``hardood queue`` prints, or any of: an image file on disk (found by its
    content hash), a path or file name registered in the store (``p_db0b5d43.jpg``), or a sha256
    or a unique prefix of at least ``MIN_PREFIX`` hex digits.
    """
    text = str(like).strip()
    db = store.db_path(conn)
    path = Path(text)
    if path.is_file():
        sha = _sha256_of_file(path)
        if not conn.execute("SELECT 1 FROM images WHERE sha256 = ?", (sha,)).fetchone():
            raise DataError(
                f"{path} (sha256 {sha[:12]}) is not in {db}; add it to the pool and run "
                "`hardood mine` first"
            )
        return sha
    prefix = text.lower()
    if _HEX.match(prefix) and MIN_PREFIX <= len(prefix) <= 64:
        found = [
            r[0]
            for r in conn.execute(
                "SELECT sha256 FROM images WHERE sha256 >= ? AND sha256 < ? "
                "ORDER BY sha256 LIMIT 3",
                (prefix, prefix + "g"),  # 'g' sorts after every hex digit
            )
        ]
        if len(found) > 1:
            raise ConfigError(
                f"sha256 prefix {prefix!r} matches several images "
                f"({', '.join(f[:12] for f in found)}{', ...' if len(found) > 2 else ''}); "
                "give more digits"
            )
        if found:
            return found[0]
    named = _stored_matches(conn, text)
    if len(named) > 1:
        listed = "; ".join(f"{sha[:12]} {where}" for sha, where in sorted(named.items())[:5])
        raise ConfigError(
            f"{text!r} names {len(named)} different images in {db} ({listed}); "
            "give the full path or the sha256 prefix that `hardood queue` prints"
        )
    if named:
        return next(iter(named))
    raise MissingInputError(
        f"{text}: no image file there, no stored path or file name in {db} matches it, and it is "
        f"not a sha256 prefix (at least {MIN_PREFIX} hex digits) of a stored image; "
        "`hardood queue` prints a sha256 prefix and the path of each queued image"
    )


def _stored_matches(conn: sqlite3.Connection, text: str) -> dict[str, str]:
    """sha256 -> first registered path, for images registered under ``text``.

    A bare file name (``p_db0b5d43.jpg``) matches any registered path with that name; a path must
    match a registered path in full (absolute, or relative to the working directory or its root).
    """
    posix = PurePosixPath(text.replace("\\", "/"))
    if not posix.name:
        return {}
    bare = len(posix.parts) == 1
    wanted = {str(posix), str(Path(text).absolute())}
    found: dict[str, str] = {}
    for r in conn.execute(
        "SELECT p.sha256, r.path AS root, p.relpath FROM image_paths p JOIN roots r USING (root_id) "
        "WHERE p.relpath = :name OR substr(p.relpath, -length(:name) - 1) = '/' || :name "
        "ORDER BY p.root_id, p.relpath",
        {"name": posix.name},
    ):
        relpath = store.path_text(r["relpath"])
        full = str(Path(store.path_text(r["root"])) / relpath)
        if bare or relpath in wanted or full in wanted:
            found.setdefault(r["sha256"], full)
    return found


def _in_chunks(conn: sqlite3.Connection, sql: str, keys: Sequence[str]) -> list[sqlite3.Row]:
    rows: list[sqlite3.Row] = []
    for start in range(0, len(keys), _SQL_CHUNK):
        chunk = list(keys[start : start + _SQL_CHUNK])
        rows += conn.execute(sql.format(marks=",".join("?" * len(chunk))), chunk).fetchall()
    return rows


def image_details(conn: sqlite3.Connection, keys: Sequence[str]) -> pd.DataFrame:
    """Path, latest score and latest verdict of each key (one row per key, in order)."""
    paths: dict[str, str] = {}
    for r in _in_chunks(
        conn,
        "SELECT p.sha256, r.path, p.relpath FROM image_paths p JOIN roots r USING (root_id) "
        "WHERE p.sha256 IN ({marks}) ORDER BY p.root_id DESC, p.relpath DESC",
        keys,
    ):
        # ordered so the first (root_id, relpath) of an image is written last and wins
        paths[r["sha256"]] = store.shown_path(
            Path(store.path_text(r["path"])) / store.path_text(r["relpath"])
        )
    scores: dict[str, tuple[int, float]] = {}
    for r in _in_chunks(
        conn,
        "SELECT sha256, top_class, hardness_score FROM scores WHERE sha256 IN ({marks}) "
        "ORDER BY run_id",
        keys,
    ):
        scores[r["sha256"]] = (int(r["top_class"]), float(r["hardness_score"]))
    verdicts: dict[str, str] = {}
    for r in _in_chunks(
        conn,
        "SELECT sha256, verdict FROM verdicts WHERE undone = 0 AND sha256 IN ({marks}) "
        "ORDER BY created_at, verdict_id",
        keys,
    ):
        verdicts[r["sha256"]] = r["verdict"]
    classes = store.get_classes(conn) or []
    top = [scores.get(k, (None, None))[0] for k in keys]
    return pd.DataFrame(
        {
            "sha256": list(keys),
            "path": [paths.get(k) for k in keys],
            "top_class": pd.array(top, dtype="Int64"),
            "class_name": [classes[t] if t is not None and t < len(classes) else None for t in top],
            "hardness_score": [scores.get(k, (None, np.nan))[1] for k in keys],
            "verdict": [verdicts.get(k) for k in keys],
        }
    )


def _load_vectors(conn, embedder) -> tuple[list[str], np.ndarray, str]:
    name = resolve_embedder(conn, embedder)
    keys, vectors = EmbeddingFile.open(conn, name).load_all()
    return keys, unit_rows(vectors), name


def find_similar(
    conn: sqlite3.Connection, like: str | Path, k: int = 50, embedder: str = DEFAULT_EMBEDDER
) -> pd.DataFrame:
    """The ``k`` stored images most similar to ``like`` (cosine similarity of embeddings).

    Parameters
    ----------
    conn
        A connection to the curation store.
    like
        What ``hardood queue`` prints: a sha256 or a unique prefix of one, a path or file name
        registered in the store, or any image file that was mined (found by content hash).
    k
        How many neighbours (the image itself is left out).
    embedder
        Stored embedder name, or a prefix of one (``"classifier"``: the classifier's embeddings).

    Returns
    -------
    pandas.DataFrame
        ``rank, sha256, path, similarity, top_class, class_name, hardness_score, verdict``,
        most similar first.

    Examples
    --------
    >>> with store.connect("curation.db") as conn:  # doctest: +SKIP
    ...     table = find_similar(conn, "p_db0b5d43.jpg", k=10)
    """
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    with store.transaction(conn):  # one snapshot: vectors and details agree
        sha = resolve_image(conn, str(like))
        name = resolve_embedder(conn, embedder)
        if EmbeddingFile.open(conn, name).n_rows > APPROXIMATE_FROM:
            found = _approximate_neighbours(conn, name, sha, k)
        else:
            found = _exact_neighbours(conn, name, sha, k)
        details = image_details(conn, [key for key, _ in found])
    details.insert(0, "rank", np.arange(1, len(found) + 1))
    details.insert(3, "similarity", [s for _, s in found])
    return details


def _no_embedding(sha: str, name: str) -> DataError:
    return DataError(
        f"image {sha[:12]} has no {name!r} embedding (not scored yet, or a bad image); "
        "run `hardood mine` first"
    )


def _exact_neighbours(conn, name: str, sha: str, k: int) -> list[tuple[str, float]]:
    keys, vectors, _ = _load_vectors(conn, name)
    position = {key: i for i, key in enumerate(keys)}.get(sha)
    if position is None:
        raise _no_embedding(sha, name)
    index = build_index(vectors)
    query = np.ascontiguousarray(vectors[position : position + 1], dtype=np.float32)
    sims, rows = index.search(query, min(k + 1, len(keys)))
    found = [(r, s) for r, s in zip(rows[0], sims[0]) if r >= 0 and r != position][:k]
    return [(keys[r], float(s)) for r, s in found]


def _approximate_neighbours(conn, name: str, sha: str, k: int) -> list[tuple[str, float]]:
    """Beyond ``APPROXIMATE_FROM`` vectors: the saved IVF-PQ index, re-ranked exactly."""
    row = conn.execute(
        "SELECT row FROM embeddings WHERE sha256 = ? AND embedder = ?", (sha, name)
    ).fetchone()
    if row is None:
        raise _no_embedding(sha, name)
    found = nearest_rows(conn, name, int(row["row"]), 2 * k)  # room for unreferenced rows
    rows = [r for r, _ in found]
    key_of = {
        int(r["row"]): r["sha256"]
        for r in _in_chunks(
            conn,
            f"SELECT row, sha256 FROM embeddings WHERE embedder = '{name}' AND row IN ({{marks}})",
            rows,
        )
    }
    return [(key_of[r], s) for r, s in found if r in key_of][:k]


def _open_candidates(conn: sqlite3.Connection) -> tuple[set[str], set[str]]:
    """(seeds, blocked): confirmed hard OoDs, and images that must not be suggested."""
    latest: dict[str, str] = {}
    for r in conn.execute(
        "SELECT sha256, verdict FROM verdicts WHERE undone = 0 ORDER BY created_at, verdict_id"
    ):
        latest[r["sha256"]] = r["verdict"]
    seeds = {sha for sha, verdict in latest.items() if verdict == "no_foreground"}
    blocked = set(latest)
    blocked |= {r[0] for r in conn.execute("SELECT sha256 FROM queue")}
    blocked |= {r[0] for r in conn.execute("SELECT sha256 FROM images WHERE status != 'ok'")}
    # a near-duplicate copy is covered by its group's representative
    blocked |= {
        r[0] for r in conn.execute("SELECT sha256 FROM dup_groups WHERE representative != sha256")
    }
    return seeds, blocked


def expand_from_verdicts(
    conn: sqlite3.Connection,
    k: int = 10,
    embedder: str = DEFAULT_EMBEDDER,
    among: Collection[str] | None = None,
) -> pd.DataFrame:
    """Up to ``k`` nearest open neighbours of each image confirmed as a hard OoD.

    Seeds are images whose latest verdict (not undone) is ``no_foreground``. A neighbour is open
    when it has no verdict, is not in the queue, has status ok and is not a non-representative
    member of a near-duplicate group; with ``among``, it must also be one of those sha256s (the
    queue passes its eligible candidates, so the k found are all usable). A neighbour of several
    seeds is listed once, with the seed it is most similar to.

    Returns
    -------
    pandas.DataFrame
        ``rank, sha256, path, similarity, top_class, class_name, hardness_score, seed_sha256``,
        most similar first; empty when there is no seed.
    """
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    with store.transaction(conn):
        seeds, blocked = _open_candidates(conn)
        keys, vectors, _ = _load_vectors(conn, embedder)
        position = {key: i for i, key in enumerate(keys)}
        seed_rows = sorted(position[s] for s in seeds if s in position)
        allowed = None if among is None else set(among)
        is_open = np.array(
            [key not in blocked and (allowed is None or key in allowed) for key in keys], dtype=bool
        )
        best: dict[int, tuple[float, int]] = {}  # neighbour row -> (similarity, seed row)
        if seed_rows and is_open.any():
            for seed, row, sim in _nearest_open(vectors, seed_rows, is_open, k):
                if row not in best or sim > best[row][0]:
                    best[row] = (sim, seed)
        picked = sorted(best, key=lambda r: (-best[r][0], keys[r]))
        details = image_details(conn, [keys[r] for r in picked])
    details = details.drop(columns="verdict")
    details.insert(0, "rank", np.arange(1, len(picked) + 1))
    details.insert(3, "similarity", [best[r][0] for r in picked])
    details["seed_sha256"] = [keys[best[r][1]] for r in picked]
    return details


def _nearest_open(vectors: np.ndarray, seed_rows: list[int], is_open: np.ndarray, k: int):
    """Yield (seed row, neighbour row, similarity) for up to k open neighbours of each seed."""
    index = build_index(vectors)
    n = len(vectors)
    pending = list(seed_rows)
    depth = min(n, 4 * k + 1)
    while pending:
        queries = np.ascontiguousarray(vectors[pending], dtype=np.float32)
        sims, rows = index.search(queries, depth)
        short = []
        for seed, row_list, sim_list in zip(pending, rows, sims):
            keep = (row_list >= 0) & is_open[np.maximum(row_list, 0)] & (row_list != seed)
            if keep.sum() < k and depth < n:
                short.append(seed)  # filtered below k: look deeper
                continue
            for row, sim in list(zip(row_list[keep], sim_list[keep]))[:k]:
                yield seed, int(row), float(sim)
        pending, depth = short, min(n, depth * 4)
