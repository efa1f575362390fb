"""Keyboard shortcuts for the review app.

Streamlit has no hotkeys, so a small script (run once in the page through ``st.html``) listens for
key presses on the document and clicks the matching widget, found by the ``st-key-<key>`` class
Streamlit gives every keyed element. Clicking the real widget keeps the app's ordinary flow: a
key press is exactly a click. Widgets left over from the previous run (``data-stale``) are never
clicked, and keys typed into text fields are left alone.
"""

from __future__ import annotations

import json

# Single view: key -> verdict. Widget keys: f"{VERDICT_PREFIX}{verdict}__{sha256}"
VERDICT_KEYS = {
    "n": "no_foreground",
    "c": "contains_foreground",
    "u": "unsure",
    "b": "bad_image",
}
VERDICT_PREFIX = "verdict__"
UNDO_KEY, UNDO_WIDGET = "z", "undo"
CAM_KEY, CAM_WIDGET = "h", "show_cam"
# Grid view: thumbnail i (0-based) flips with GRID_KEYS[i]; Enter submits the page.
GRID_KEYS = "1234567890-="
GRID_CELL_PREFIX = "gridcell_"
GRID_SUBMIT_PREFIX = "gridsubmit__"

_SCRIPT = """
<script>
(function () {
  const doc = window.parent && window.parent.document ? window.parent.document : document;
  if (doc.__hardoodHotkeys) return;
  doc.__hardoodHotkeys = true;
  const cfg = %(config)s;
  function live(selector) {
    const found = Array.from(doc.querySelectorAll(selector))
      .filter((el) => !el.closest('[data-stale="true"]') && !el.disabled);
    return found.length ? found[found.length - 1] : null;
  }
  function typing(target) {
    if (!target || !target.tagName) return false;
    if (target.isContentEditable) return true;
    if (target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
    return target.tagName === "INPUT" && !["checkbox", "radio"].includes(target.type);
  }
  function keyOf(event) {
    return event.key.length === 1 ? event.key.toLowerCase() : event.key;
  }
  function ours(key) {  // Streamlit's own single-key shortcuts (c: clear cache) must not fire
    return Boolean(cfg.verdicts[key]) || [cfg.undoKey, cfg.camKey].includes(key)
      || cfg.gridKeys.includes(key);
  }
  function widgetFor(key) {
    if (cfg.verdicts[key]) return live(`[class*="st-key-${cfg.verdictPrefix}${cfg.verdicts[key]}__"] button`);
    if (key === cfg.undoKey) return live(`.st-key-${cfg.undoWidget} button`);
    if (key === cfg.camKey) return live(`.st-key-${cfg.camWidget} input`);
    const cell = cfg.gridKeys.indexOf(key);
    if (cell >= 0) return live(`.st-key-${cfg.cellPrefix}${cell} input[type="checkbox"]`);
    if (key === "Enter") return live(`[class*="st-key-${cfg.submitPrefix}"] button`);
    return null;
  }
  doc.defaultView.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (typing(event.target)) return;
    const key = keyOf(event);
    const widget = widgetFor(key);
    if (!widget && !ours(key)) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    if (widget) widget.click();
  }, true);
  // a click on a grid thumbnail flips its checkbox, like its number key
  doc.addEventListener("click", (event) => {
    const img = event.target && event.target.closest ? event.target.closest("img") : null;
    const cell = img ? img.closest(`[class*="st-key-${cfg.cellPrefix}"]`) : null;
    if (!cell || cell.closest('[data-stale="true"]')) return;
    const box = cell.querySelector('input[type="checkbox"]');
    if (box) box.click();
  });
})();
</script>
"""


def hotkeys_html() -> str:
    """The ``<script>`` that installs the shortcuts (once per page, however often it is sent)."""
    config = {
        "verdicts": VERDICT_KEYS,
        "verdictPrefix": VERDICT_PREFIX,
        "undoKey": UNDO_KEY,
        "undoWidget": UNDO_WIDGET,
        "camKey": CAM_KEY,
        "camWidget": CAM_WIDGET,
        "gridKeys": list(GRID_KEYS),
        "cellPrefix": GRID_CELL_PREFIX,
        "submitPrefix": GRID_SUBMIT_PREFIX,
    }
    return _SCRIPT % {"config": json.dumps(config)}


def grid_key_label(index: int) -> str:
    """The key that flips thumbnail ``index`` (0-based), or "" past the twelfth."""
    return GRID_KEYS[index] if index < len(GRID_KEYS) else ""


def shortcuts_markdown() -> str:
    """The shortcut table shown in the sidebar."""
    verdicts = ", ".join(f"`{k}` {v}" for k, v in VERDICT_KEYS.items())
    return (
        f"**Single view:** {verdicts}; `{UNDO_KEY}` undo; `{CAM_KEY}` CAM overlay.\n\n"
        f"**Grid view:** every thumbnail starts as *no foreground*; `1`-`9`, `0`, `-`, `=` (or a "
        f"click) flip thumbnails 1-12 to *contains foreground*; `Enter` submits the page; "
        f"`{UNDO_KEY}` undoes the last verdict."
    )
