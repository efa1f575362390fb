"""The review queue: near-duplicate groups collapsed, ranked by hardness with diversity and quotas.

``build_queue`` reads the scores of one checkpoint, groups near duplicates (one representative per
group enters the queue, the hardest), leaves out groups someone already reviewed (their verdicts
stay), clusters each top class with K-means, orders the rest (``curate.queue.ranking``) and replaces the
``queue`` rows in one transaction. ``queue_frame`` reads the queue back as a DataFrame; ``hardood
queue`` prints it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from curate import store
from curate.neighbours.near_duplicates import (
    CONFIRM_EMBEDDER,
    DEFAULT_DUP_CANDIDATE_THRESHOLD,
    DEFAULT_DUP_THRESHOLD,
    THUMB_EMBEDDER,
    group_near_duplicates,
)
from curate.queue.ranking import order_candidates, reason_text

SHA256_SHOWN = 12  # hex digits of the sha256 a terminal table shows (unique in any real pool)


@dataclass(frozen=True)
class QueueSettings:
    """The knobs of ``build_queue`` (``MineConfig`` carries the same names)."""

    queue_size: int = 1000
    min_hardness: float = 0.5
    dup_threshold: float = DEFAULT_DUP_THRESHOLD
    dup_candidate_threshold: float = DEFAULT_DUP_CANDIDATE_THRESHOLD
    clusters_per_class: int = 20
    hardness_tier: float = 1.0
    max_class_share: float = 0.5
    clip_fg_weight: float = 0.0
    expand_from_verdicts: bool = False
    expand_k: int = 5
    expand_min_similarity: float = 0.9
    seed: int = 0


def load_candidates(conn: sqlite3.Connection, checkpoint_sha256: str) -> pd.DataFrame:
    """Scored ok images with at least one path: sha256, top_class, top_score, hardness_score, ..."""
    rows = conn.execute(
        "SELECT s.sha256, s.top_class, s.top_score, s.hardness_score, s.energy_score, "
        "s.clip_fg_score "
        "FROM scores s JOIN images i ON i.sha256 = s.sha256 "
        "WHERE s.checkpoint_sha256 = ? AND i.status = 'ok' "
        "AND EXISTS (SELECT 1 FROM image_paths p WHERE p.sha256 = s.sha256) "
        "ORDER BY s.sha256",
        (checkpoint_sha256,),
    ).fetchall()
    columns = [
        "sha256",
        "top_class",
        "top_score",
        "hardness_score",
        "energy_score",
        "clip_fg_score",
    ]
    return pd.DataFrame([tuple(r) for r in rows], columns=columns)


def first_paths(conn: sqlite3.Connection, shas: list[str]) -> dict[str, Path]:
    """sha256 -> absolute path of the image's first registered path."""
    rows = conn.execute(
        "SELECT p.sha256, r.path AS root, p.relpath FROM image_paths p "
        "JOIN roots r ON r.root_id = p.root_id "
        "WHERE p.rowid IN (SELECT MIN(rowid) FROM image_paths GROUP BY sha256)"
    ).fetchall()
    wanted = set(shas)
    return {
        r["sha256"]: Path(store.path_text(r["root"])) / store.path_text(r["relpath"])
        for r in rows
        if r["sha256"] in wanted
    }


def reviewed_images(conn: sqlite3.Connection) -> dict[str, str]:
    """sha256 -> latest verdict, over verdicts not undone."""
    rows = conn.execute(
        "SELECT sha256, verdict FROM verdicts WHERE undone = 0 ORDER BY created_at, verdict_id"
    ).fetchall()
    return {r["sha256"]: r["verdict"] for r in rows}


def _write_dup_groups(conn, groups: pd.DataFrame) -> None:
    conn.execute("DELETE FROM dup_groups")
    conn.executemany(
        "INSERT INTO dup_groups(sha256, representative, group_size, dup_score) VALUES (?, ?, ?, ?)",
        [
            (r.sha256, r.representative, int(r.group_size), _float_or_none(r.dup_score))
            for r in groups.itertuples(index=False)
        ],
    )


def _float_or_none(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def build_queue(
    conn: sqlite3.Connection,
    checkpoint_sha256: str,
    embedder: str,
    embedding_dim: int,
    run_id: int,
    settings: QueueSettings = QueueSettings(),
) -> pd.DataFrame:
    """Rebuild the review queue from stored scores and embeddings; returns it as a DataFrame.

    Verdicts and leases are never touched. A group with any reviewed member stays out of the
    queue, so one verdict covers its near duplicates. With ``expand_from_verdicts``, unseen
    neighbours of confirmed hard OoDs that pass ``min_hardness`` and ``expand_min_similarity``
    are ranked by the same rule as every other candidate and keep their place even past
    ``queue_size``; their reason names the confirmed image they resemble.

    Returns
    -------
    DataFrame with rank, sha256, top_class, class_name, hardness_score, cluster, n_clusters,
    group_size, over_quota, expanded_from and reason, ordered by rank.
    """
    from curate.neighbours.diversity import cluster_within_classes
    from curate.neighbours.vector_index import EmbeddingFile

    with store.transaction(conn):  # one snapshot of the scores and of the rows of each vector
        class_names = store.get_classes(conn) or []
        candidates = load_candidates(conn, checkpoint_sha256)
        shas = list(candidates["sha256"])
        vectors = np.zeros((0, embedding_dim), np.float32)
        if shas:
            # row views of the memory-mapped files: only the rows used below are ever read
            vectors = EmbeddingFile(conn, embedder, embedding_dim).view(shas)
            descriptors = EmbeddingFile.open(conn, THUMB_EMBEDDER).view(shas)
            thumbnails = EmbeddingFile.open(conn, CONFIRM_EMBEDDER).view(shas)
    if shas:
        groups = group_near_duplicates(
            shas,
            descriptors,
            thumbnails,
            candidates["hardness_score"].to_numpy(),
            settings.dup_threshold,
            settings.dup_candidate_threshold,
        )
    else:
        groups = pd.DataFrame(columns=["sha256", "representative", "group_size", "dup_score"])
    candidates = _attach_groups(candidates, groups)

    reviewed = reviewed_images(conn)
    reviewed_groups = set(candidates.loc[candidates["sha256"].isin(reviewed), "representative"])
    open_reps = candidates[
        (candidates["sha256"] == candidates["representative"])
        & ~candidates["representative"].isin(reviewed_groups)
    ]
    eligible = open_reps[open_reps["hardness_score"] >= settings.min_hardness]
    neighbours = pd.DataFrame(columns=["sha256", "similarity", "expanded_from"])
    if settings.expand_from_verdicts:
        neighbours = _expansion(conn, embedder, settings.expand_k, eligible)
        neighbours = neighbours[neighbours["similarity"] >= settings.expand_min_similarity]
    if len(eligible):
        positions = candidates.index.get_indexer(eligible.index)
        clusters = cluster_within_classes(
            vectors[positions],
            eligible["top_class"].to_numpy(),
            settings.clusters_per_class,
            settings.seed,
            keys=list(eligible["sha256"]),
        )
        eligible = eligible.assign(cluster=np.asarray(clusters))
    else:
        eligible = eligible.assign(cluster=pd.Series(dtype=int))
    found = neighbours.set_index("sha256")
    eligible = eligible.assign(
        expanded_from=eligible["sha256"].map(found["expanded_from"]),
        similarity=eligible["sha256"].map(found["similarity"]),
    )
    ranked = order_candidates(
        eligible,
        settings.queue_size,
        settings.hardness_tier,
        settings.max_class_share,
        settings.clip_fg_weight,
        always_keep=set(found.index),
    )
    queue = _with_reasons(ranked, class_names)
    with store.transaction(conn, immediate=True):
        _write_dup_groups(conn, groups)
        conn.execute("DELETE FROM queue")
        conn.executemany(
            "INSERT INTO queue(sha256, rank, run_id, top_class, hardness_score, cluster, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.sha256,
                    int(r.rank),
                    run_id,
                    int(r.top_class),
                    float(r.hardness_score),
                    None if pd.isna(r.cluster) else int(r.cluster),
                    r.reason,
                )  # fmt: skip
                for r in queue.itertuples(index=False)
            ],
        )
    columns = ["rank", "sha256", "top_class", "class_name", "hardness_score", "cluster",
               "n_clusters", "group_size", "over_quota", "expanded_from", "reason"]  # fmt: skip
    return queue[columns]


def _attach_groups(candidates: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    frame = candidates.merge(
        groups[["sha256", "representative", "group_size", "dup_score"]], on="sha256", how="left"
    )
    frame["representative"] = frame["representative"].fillna(frame["sha256"])
    frame["group_size"] = frame["group_size"].fillna(1).astype(int)
    return frame


def _with_reasons(queue: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    queue = queue.copy()
    for column, default in (("cluster", np.nan), ("n_clusters", np.nan), ("over_quota", False),
                            ("expanded_from", None)):  # fmt: skip
        if column not in queue:
            queue[column] = default
    queue["class_name"] = [store.class_name(class_names, c) for c in queue["top_class"]]
    reasons = []
    for r in queue.itertuples(index=False):
        text = reason_text(r.class_name, r.hardness_score, _int(r.cluster), _int(r.n_clusters),
                           r.group_size, r.clip_fg_score, bool(r.over_quota))  # fmt: skip
        if isinstance(r.expanded_from, str):
            text = (
                f"like confirmed hard OoD {r.expanded_from[:8]} (cos {r.similarity:.2f}) · {text}"
            )
        reasons.append(text)
    queue["reason"] = reasons
    return queue


def _int(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _expansion(conn, embedder: str, k: int, eligible: pd.DataFrame) -> pd.DataFrame:
    """The nearest unseen eligible candidates of each confirmed hard OoD:
    ``sha256, similarity, expanded_from``.

    ``curate.neighbours.similar.expand_from_verdicts`` runs before the queue is replaced, so "unseen" means
    not reviewed and not in the previous queue.
    """
    from curate.neighbours.similar import expand_from_verdicts

    found = expand_from_verdicts(conn, k=k, embedder=embedder, among=eligible["sha256"])
    found = found[["sha256", "similarity", "seed_sha256"]]
    return found.rename(columns={"seed_sha256": "expanded_from"})


# ---- reading the queue back -------------------------------------------------------------------


def queue_frame(conn: sqlite3.Connection, top: int | None = None) -> pd.DataFrame:
    """The queue in rank order, one row per image, ready to sort or export.

    Columns: rank, sha256, path (absolute, first registered path), top_class (name), top_score,
    hardness_score, reason, group_size, class_2, score_2, class_3, score_3, cluster,
    clip_fg_score, energy_score, dup_score, width, height.
    """
    with store.transaction(conn):
        class_names = store.get_classes(conn) or []
        rows = conn.execute(
            "SELECT q.rank, q.sha256, r.path AS root, p.relpath, q.top_class, s.top_score, "
            "q.hardness_score, q.reason, COALESCE(d.group_size, 1) AS group_size, s.probs, "
            "q.cluster, s.clip_fg_score, s.energy_score, d.dup_score, i.width, i.height "
            "FROM queue q JOIN runs ru ON ru.run_id = q.run_id "
            "JOIN images i ON i.sha256 = q.sha256 "
            "LEFT JOIN scores s ON s.sha256 = q.sha256 "
            "AND s.checkpoint_sha256 = ru.checkpoint_sha256 "
            "LEFT JOIN image_paths p ON p.rowid = "
            "(SELECT MIN(rowid) FROM image_paths WHERE sha256 = q.sha256) "
            "LEFT JOIN roots r ON r.root_id = p.root_id "
            "LEFT JOIN dup_groups d ON d.sha256 = q.sha256 "
            "ORDER BY q.rank LIMIT ?",
            (-1 if top is None else int(top),),
        ).fetchall()
    records = []
    for r in rows:
        probs = store.decode_probs(r["probs"]) if r["probs"] is not None else np.zeros(0)
        order = np.argsort(-probs, kind="stable")
        record = {
            "rank": r["rank"],
            "sha256": r["sha256"],
            "path": store.shown_path(
                Path(store.path_text(r["root"])) / store.path_text(r["relpath"])
            )
            if r["root"]
            else None,
            "top_class": store.class_name(class_names, r["top_class"]),
            "top_score": r["top_score"],
            "hardness_score": r["hardness_score"],
            "reason": r["reason"],
            "group_size": r["group_size"],
        }
        for place in (2, 3):
            has = len(order) >= place
            record[f"class_{place}"] = (
                store.class_name(class_names, int(order[place - 1])) if has else None
            )
            record[f"score_{place}"] = float(probs[order[place - 1]]) if has else None
        for key in ("cluster", "clip_fg_score", "energy_score", "dup_score", "width", "height"):
            record[key] = r[key]
        records.append(record)
    columns = ["rank", "sha256", "path", "top_class", "top_score", "hardness_score", "reason",
               "group_size", "class_2", "score_2", "class_3", "score_3", "cluster",
               "clip_fg_score", "energy_score", "dup_score", "width", "height"]  # fmt: skip
    return pd.DataFrame(records, columns=columns)


# ---- `hardood queue` --------------------------------------------------------------------------


def format_queue_table(frame: pd.DataFrame) -> str:
    """A terminal table: rank, hardness, class, group size, reason, sha256 prefix and full path.

    The sha256 prefix and the path both paste into ``hardood similar --like``.
    """
    table = pd.DataFrame(
        {
            "rank": frame["rank"],
            "hardness": frame["hardness_score"].map("{:.3f}".format),
            "class": frame["top_class"],
            "group_size": frame["group_size"],
            "reason": frame["reason"],
            "sha256": frame["sha256"].str[:SHA256_SHOWN],
            "path": [p if p else "?" for p in frame["path"]],
        }
    )
    return table.to_string(index=False)
