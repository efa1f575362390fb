"""The hard-OoD manifest contract: names, columns, verdicts, label policies and the error type.

A manifest (schema version 1, see ``data_manifests/SCHEMA.md``) is a folder with two files::

    manifest.csv        one row per reviewed image, sorted by sha256
    manifest.meta.json  schema_version, image_root, classes, provenance, mining, label_policy

``write_manifest`` writes one atomically; ``validate_manifest`` checks one completely and raises a
single ``ManifestError`` naming every offending row; ``load_ood_list`` is the trainer's entry and
also reads the reference implementation's plain ``ood_list.txt``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wood_train.errors import ConfigError, DataError

if TYPE_CHECKING:  # pandas is heavy; the command line imports this module for its constants
    import pandas as pd

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1,)
CSV_NAME = "manifest.csv"
META_NAME = "manifest.meta.json"
COLUMNS = (
    "path", "sha256", "verdict", "top_class", "top_score",
    "votes_no_foreground", "votes_contains_foreground", "annotators",
)  # fmt: skip
VERDICTS = ("no_foreground", "contains_foreground", "unsure", "bad_image")
TRAINED_VERDICT = "no_foreground"
LABEL_POLICIES = ("majority", "unanimous", "any")
META_KEYS = (
    "schema_version", "image_root", "classes", "created_at", "tool_version",
    "scoring_checkpoint_sha256", "mining", "label_policy",
)  # fmt: skip
ANNOTATOR_SEPARATOR = ";"
# One reviewer id in the ``annotators`` cell: the names the review app signs in with. No
# spreadsheet formula (``=cmd|' /C calc'!A0``) fits this pattern.
ANNOTATOR_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}")
DEFAULT_MAX_ERRORS = 20
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
# manifest.meta.json holds settings, not data: a bigger or deeper file is refused unread.
MAX_META_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
# OWASP's CSV-injection rule: a text cell starting with one of these is written with a leading
# "'" so a spreadsheet shows it as text (see ``escape_cell``).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_START = "[" + re.escape("".join(FORMULA_PREFIXES)) + "]"
_ESCAPED = re.compile("'+" + _FORMULA_START)
_NEEDS_ESCAPE = re.compile("'*" + _FORMULA_START)
_HASH_CHUNK = 1 << 20


class ManifestError(DataError):
    """A manifest (or OoD list) that cannot be trained on; the message lists every problem."""

    def __init__(
        self,
        source: str | Path,
        problems: list[str],
        max_errors: int = DEFAULT_MAX_ERRORS,
        outcome: str = "nothing was loaded",
    ):
        self.source = str(source)
        self.problems = list(problems)
        shown = self.problems[:max_errors]
        lines = [f"{self.source}: {len(self.problems)} problem(s), {outcome}:"]
        lines += [f"  - {p}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class LoadedManifest:
    """A manifest that passed ``validate_manifest``.

    ``rows`` holds the CSV as read (strings; ``top_score`` float, the vote counts int) plus a
    ``line`` column (CSV line number); ``ood_paths`` are the absolute paths of the
    ``no_foreground`` rows in file order (sorted by sha256).
    """

    meta: dict[str, Any]
    rows: pd.DataFrame
    image_root: Path
    ood_paths: list[Path]
    content_sha256: str  # SHA-256 of manifest.csv and manifest.meta.json, as read


def verdict_from_votes(
    votes_no_foreground: int,
    votes_contains_foreground: int,
    policy: str,
    votes_unsure: int = 0,
    adjudicated: str | None = None,
) -> str:
    """The verdict a label policy gives a row's votes (``bad_image`` is set by curation, not votes).

    - ``majority``: the side with more votes wins; a tie (including 0-0) is ``unsure``.
      ``unsure`` votes abstain.
    - ``unanimous``: a side wins only if it has at least one vote and every other vote, ``unsure``
      included, is absent: one ``unsure`` vote blocks.
    - ``any``: one ``contains_foreground`` vote drops the image; else one ``unsure`` vote blocks
      (``unsure``); else one ``no_foreground`` vote keeps it; no votes is ``unsure``.
    - An adjudicated row (the lead decided a disagreement, column ``adjudicated_verdict``) takes
      the adjudicated verdict whatever the votes and the policy.
    """
    if adjudicated:
        return adjudicated
    no, yes, unsure = int(votes_no_foreground), int(votes_contains_foreground), int(votes_unsure)
    if policy == "majority":
        if no == yes:
            return "unsure"
        return "no_foreground" if no > yes else "contains_foreground"
    if policy == "unanimous":
        if unsure:
            return "unsure"
        if no > 0 and yes == 0:
            return "no_foreground"
        if yes > 0 and no == 0:
            return "contains_foreground"
        return "unsure"
    if policy == "any":
        if yes > 0:
            return "contains_foreground"
        return "no_foreground" if no > 0 and not unsure else "unsure"
    raise ConfigError(f"unknown label_policy {policy!r}; choose one of {LABEL_POLICIES}")


def escape_cell(text: str) -> str:
    """A text cell as written to a spreadsheet-safe CSV: one more leading "'" when it starts
    with a formula character (after any "'"s), so ``unescape_cell`` reads back exactly ``text``.

    >>> escape_cell("=HYPERLINK(x)"), escape_cell("'=a"), escape_cell("'plain")
    ("'=HYPERLINK(x)", "''=a", "'plain")
    """
    return "'" + text if _NEEDS_ESCAPE.match(text) else text


def unescape_cell(text: str) -> str:
    """The inverse of ``escape_cell``: drop exactly one leading "'" before a formula character."""
    return text[1:] if _ESCAPED.match(text) else text


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (the ``sha256`` column)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
