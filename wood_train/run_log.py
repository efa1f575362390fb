"""Per-step and per-epoch training logs as CSV/JSON beside the checkpoint (rank 0 only)."""

from __future__ import annotations

import csv
import json
from pathlib import Path


class RunLog:
    """Append rows to ``train_log.csv`` (steps) and ``epochs.jsonl`` (validation per epoch).

    On resume, step rows past ``resume_step`` and epoch rows past ``resume_epoch`` (written after
    the last checkpoint) are dropped, so the log of a resumed run equals that of an uninterrupted
    one. Epochs are numbered from 1.
    """

    def __init__(
        self, path: str | Path, enabled: bool = True, resume_step: int = 0, resume_epoch: int = 0
    ):
        self.path = Path(path)
        self.epochs_path = self.path.with_name("epochs.jsonl")
        self.enabled = enabled
        self.fields: list[str] | None = None
        if not enabled:
            return
        if resume_step == 0:
            self.path.unlink(missing_ok=True)
            self.epochs_path.unlink(missing_ok=True)
            return
        if self.path.is_file():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            if rows:
                self.fields = list(rows[0].keys())
                self._rewrite(rows)
        if self.epochs_path.is_file():
            kept = [
                line for line in self.epochs_path.read_text().splitlines()
                if line.strip() and json.loads(line)["epoch"] <= resume_epoch
            ]  # fmt: skip
            self.epochs_path.write_text("".join(f"{line}\n" for line in kept))

    def _rewrite(self, rows: list[dict]) -> None:
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        new_file = self.fields is None or not self.path.is_file()
        if self.fields is None:
            self.fields = list(row.keys())
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    def write_epoch(self, row: dict) -> None:
        if self.enabled:
            with open(self.epochs_path, "a") as f:
                f.write(json.dumps(row) + "\n")
