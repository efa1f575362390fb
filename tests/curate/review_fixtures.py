"""A small curation store with a planted review queue: real images on disk, real store rows.

Each queue item is a tiny scene drawn with the cue of one class (rails -> train, water -> boat,
sky -> aeroplane) and a top-class heatmap on that cue, ranked 1..n. Used by the review, export and
app tests and, at 10,000 items, by ``benches/app_latency.py``.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from curate import store

CLASSES = ["aeroplane", "boat", "train", "person"]
CUES = {"aeroplane": "sky", "boat": "water", "train": "rails"}
CHECKPOINT = "c" * 64
HEATMAP_SIZE = 16


@dataclass(frozen=True)
class ReviewStore:
    db: Path
    root: Path
    shas: list[str]  # in queue rank order
    relpaths: list[str]
    top_classes: list[str]
    run_id: int


def draw_scene(cue: str, index: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A cue-only scene (no foreground object), made unique by ``index``."""
    rng = np.random.default_rng(index)
    w, h = size
    img = Image.new("RGB", size, (200, 200, 200))
    draw = ImageDraw.Draw(img)
    horizon = int(h * rng.uniform(0.35, 0.6))
    sky = (110 + int(rng.integers(0, 60)), 160 + int(rng.integers(0, 50)), 235)
    draw.rectangle([0, 0, w, horizon], fill=sky)
    if cue == "rails":
        draw.rectangle([0, horizon, w, h], fill=(120, 105, 90))
        for y in range(horizon + 4, h, 7):
            draw.line([(w * 0.3, y), (w * 0.7, y)], fill=(80, 60, 40), width=3)
        draw.line([(w * 0.45, horizon), (w * 0.36, h)], fill=(60, 60, 70), width=3)
        draw.line([(w * 0.55, horizon), (w * 0.64, h)], fill=(60, 60, 70), width=3)
    elif cue == "water":
        draw.rectangle([0, horizon, w, h], fill=(40, 90, 150))
        for y in range(horizon + 5, h, 9):
            x0 = int(rng.integers(0, w // 2))
            draw.arc([x0, y, x0 + 30, y + 8], 0, 180, fill=(200, 220, 240), width=2)
    else:  # sky: clouds over a thin strip of land
        draw.rectangle([0, int(h * 0.85), w, h], fill=(90, 130, 80))
        for _ in range(3):
            x, y = int(rng.integers(0, w - 40)), int(rng.integers(5, h // 2))
            draw.ellipse([x, y, x + 40, y + 16], fill=(245, 245, 250))
    # a few pixels that encode the index keep every file's bytes (and sha256) distinct
    for bit in range(20):
        if index >> bit & 1:
            img.putpixel((bit, 0), (0, 0, 0))
    return img


def cue_heatmap(cue: str, size: int = HEATMAP_SIZE) -> np.ndarray:
    """A top-class CAM on the cue region (rails/water: bottom half; sky: top half)."""
    rows = np.linspace(0, 1, size)[:, None] * np.ones((1, size))
    cam = rows if cue in ("rails", "water") else 1.0 - rows
    return np.clip(cam * 255, 0, 255).astype(np.uint8)


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def build_review_store(
    folder: Path, n_items: int, size: tuple[int, int] = (160, 120)
) -> ReviewStore:
    """Write ``n_items`` images under ``folder/pool`` and a store ``folder/curation.db`` whose
    queue ranks them 1..n (item i's top class cycles through aeroplane, boat, train)."""
    root = folder / "pool"
    root.mkdir(parents=True, exist_ok=True)
    db = store.open_store(folder / "curation.db")
    with store.connect(db) as conn:
        run_id = store.start_run(
            conn, "queue", {"top": n_items, "seed": 0}, CHECKPOINT, tool_version="test"
        )
    cue_classes = list(CUES)
    shas, relpaths, tops = [], [], []
    images, paths, scores, queue = [], [], [], []
    for i in range(n_items):
        cls = cue_classes[i % len(cue_classes)]
        cue = CUES[cls]
        relpath = f"{cue}/{i:05d}.png"
        data = png_bytes(draw_scene(cue, i, size))
        (root / cue).mkdir(exist_ok=True)
        (root / relpath).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        top = CLASSES.index(cls)
        score = round(0.99 - 0.5 * i / max(1, n_items), 4)
        probs = np.full(len(CLASSES), 0.01, dtype=np.float32)
        probs[top] = score
        probs[(top + 1) % len(CLASSES)] = score / 3
        probs[(top + 2) % len(CLASSES)] = score / 9
        images.append((sha, size[0], size[1], len(data), run_id))
        paths.append((relpath, sha))
        scores.append(
            (
                sha,
                CHECKPOINT,
                run_id,
                store.encode_probs(probs),
                top,
                score,
                score,
                store.encode_heatmap(cue_heatmap(cue)),
                HEATMAP_SIZE,
            )
        )
        queue.append((sha, i + 1, run_id, top, score, f"{cue} scores {cls} {score:.2f}"))
        shas.append(sha)
        relpaths.append(relpath)
        tops.append(cls)
    with store.connect(db) as conn, store.transaction(conn):
        store.ensure_classes(conn, CLASSES)
        root_id = store.ensure_root(conn, root)
        conn.executemany(
            "INSERT INTO images(sha256, width, height, n_bytes, status, added_run) "
            "VALUES (?, ?, ?, ?, 'ok', ?)",
            images,
        )
        conn.executemany(
            "INSERT INTO image_paths(root_id, relpath, sha256) VALUES (?, ?, ?)",
            [(root_id, rel, sha) for rel, sha in paths],
        )
        conn.executemany(
            "INSERT INTO scores(sha256, checkpoint_sha256, run_id, probs, top_class, top_score, "
            "hardness_score, heatmap, heatmap_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            scores,
        )
        conn.executemany(
            "INSERT INTO queue(sha256, rank, run_id, top_class, hardness_score, reason) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            queue,
        )
        store.finish_run(conn, run_id, "done", {"queued": n_items})
    return ReviewStore(db, root.resolve(), shas, relpaths, tops, run_id)


def sign_in_all(conn, *names: str) -> list[str]:
    """Sign each annotator in; their normalised names."""
    from curate.review import annotators

    return [annotators.sign_in(conn, name) for name in names]
