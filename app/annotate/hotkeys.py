"""Keyboard shortcuts and the page guards of the review app.

Streamlit has no hotkeys of its own that fit this job, so ``hotkeys.js`` (run once in the page
through ``st.html``) listens for key presses and clicks the matching widget, found by the
``st-key-<key>`` class Streamlit gives every keyed element. A key press is exactly a click, so the
app has one path for both. The same script keeps verdicts from being given blind:

- Enter submits a grid page only with focus on the page body or a tile, never within the dwell
  (``--dwell-seconds``) of the page appearing, and never before every tile has been on screen;
  a mouse click on Submit obeys the same rule. ``n`` (and a click on "No foreground") in the
  single view waits for the same dwell.
- A new page starts at its top; Escape leaves a text field; ``v`` zooms the focused tile.

Widgets left over from the previous run (``data-stale``) are never clicked, and keys typed into
text fields stay text.
"""

from __future__ import annotations

import json
from pathlib import Path

# Single view: key -> verdict. Widget keys: f"{VERDICT_PREFIX}{verdict}__{sha256}"
VERDICT_KEYS = {
    "n": "no_foreground",
    "c": "contains_foreground",
    "u": "unsure",
    "b": "bad_image",
}
VERDICT_PREFIX = "verdict__"
ITEM_PREFIX = "item__"  # the single view's image box: f"{ITEM_PREFIX}{sha256}"
UNDO_KEY, UNDO_WIDGET = "z", "undo"
CAM_KEY, CAM_WIDGET = "h", "show_cam"
ZOOM_KEY = "v"
# Grid view: thumbnail i (0-based) flips with GRID_KEYS[i]; Enter submits the page.
GRID_KEYS = "1234567890-="
GRID_CELL_PREFIX = "gridcell_"
GRID_BOX_PREFIX = "gridcb__"
GRID_SUBMIT_PREFIX = "gridsubmit__"
RENEW_WIDGET = "renew_leases"  # clicked by the script while the annotator is active
# The lead's Disagreements view: the same keys adjudicate the item shown,
# widget keys f"{ADJUDICATE_PREFIX}{verdict}__{sha256}"; GOLD_KEY marks the last one gold.
ADJUDICATE_PREFIX = "adjudicate__"
GOLD_KEY, GOLD_WIDGET = "g", "mark_gold_last"
DEFAULT_DWELL_SECONDS = 1.0

_SCRIPT = Path(__file__).with_name("hotkeys.js")


def hotkeys_html(dwell_seconds: float, renew_every_seconds: float) -> str:
    """The ``<script>`` that installs the shortcuts and guards (once per page)."""
    config = {
        "verdicts": VERDICT_KEYS,
        "verdictPrefix": VERDICT_PREFIX,
        "itemPrefix": ITEM_PREFIX,
        "undoKey": UNDO_KEY,
        "undoWidget": UNDO_WIDGET,
        "camKey": CAM_KEY,
        "camWidget": CAM_WIDGET,
        "zoomKey": ZOOM_KEY,
        "gridKeys": list(GRID_KEYS),
        "cellPrefix": GRID_CELL_PREFIX,
        "submitPrefix": GRID_SUBMIT_PREFIX,
        "renewWidget": RENEW_WIDGET,
        "adjudicatePrefix": ADJUDICATE_PREFIX,
        "goldKey": GOLD_KEY,
        "goldWidget": GOLD_WIDGET,
        "dwellMs": round(dwell_seconds * 1000),
        "renewEveryMs": round(renew_every_seconds * 1000),
    }
    script = _SCRIPT.read_text(encoding="utf-8").replace("__CONFIG__", json.dumps(config))
    return f"<script>\n{script}\n</script>"


def grid_key_label(index: int) -> str:
    """The key that flips thumbnail ``index`` (0-based), or "" past the twelfth."""
    return GRID_KEYS[index] if index < len(GRID_KEYS) else ""


def shortcuts_markdown() -> str:
    """The shortcut table shown in the sidebar."""
    verdicts = ", ".join(f"`{k}` {v.replace('_', ' ')}" for k, v in VERDICT_KEYS.items())
    return (
        f"**Grid view:** every thumbnail starts as *no foreground*; `1`-`9`, `0`, `-`, `=` (or a "
        f"click) flip thumbnails 1-12 to *contains foreground*; `Tab` moves between tiles and "
        f"`Space` flips the focused one; `Enter` submits the page once every tile has been on "
        f"screen; `{ZOOM_KEY}` zooms the focused tile; `{UNDO_KEY}` brings the last page back.\n\n"
        f"**Single view:** {verdicts}; `{UNDO_KEY}` undo; `{CAM_KEY}` CAM beside the image; "
        f"`{ZOOM_KEY}` zoom.\n\n"
        "`Esc` leaves a text field or closes the zoom."
    )


def lead_shortcuts_markdown() -> str:
    """The lead's shortcuts, shown in the Disagreements view."""
    verdicts = ", ".join(f"`{k}` {v.replace('_', ' ')}" for k, v in VERDICT_KEYS.items())
    return f"Adjudicate the image shown: {verdicts}; `{GOLD_KEY}` marks the last one gold."
