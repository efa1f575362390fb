// hardood review app: keyboard shortcuts and the guards against blind verdicts.
// Installed once per page by hotkeys.py (st.html, not iframed); __CONFIG__ is filled in there.
(function () {
  const doc = document;
  if (window.__hardoodHotkeys) return;
  window.__hardoodHotkeys = true;
  const cfg = __CONFIG__;
  const CELL = `[class*="st-key-${cfg.cellPrefix}"]`;
  const SUBMIT = `[class*="st-key-${cfg.submitPrefix}"] button`;
  const NO_FG = `[class*="st-key-${cfg.verdictPrefix}no_foreground__"] button`;
  const ITEM = `[class*="st-key-${cfg.itemPrefix}"]`;

  const fresh = (el) => el && !el.closest('[data-stale="true"]') && !el.disabled;
  function live(selector) {
    const found = Array.from(doc.querySelectorAll(selector)).filter(fresh);
    return found.length ? found[found.length - 1] : null;
  }
  function keyClass(el, prefix) {
    const cls = Array.from(el.classList).find((c) => c.startsWith(`st-key-${prefix}`));
    return cls ? cls.slice(`st-key-${prefix}`.length) : null;
  }
  function typing(target) {
    if (!target || !target.tagName) return false;
    if (target.isContentEditable) return true;
    if (target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
    return target.tagName === "INPUT" && !["checkbox", "radio", "range"].includes(target.type);
  }
  function cells() {  // the live grid tiles, in reading order
    return Array.from(doc.querySelectorAll(CELL)).filter(fresh)
      .sort((a, b) => Number(keyClass(a, cfg.cellPrefix)) - Number(keyClass(b, cfg.cellPrefix)));
  }

  // ---- a short message in the page (role=status, so screen readers hear it too) ----------
  let hintTimer = null;
  function hint(text) {
    let box = doc.getElementById("hardood-hint");
    if (!box) {
      box = doc.createElement("div");
      box.id = "hardood-hint";
      box.setAttribute("role", "status");
      box.setAttribute("aria-live", "polite");
      doc.body.appendChild(box);
    }
    box.textContent = text;
    box.classList.add("shown");
    clearTimeout(hintTimer);
    hintTimer = setTimeout(() => box.classList.remove("shown"), 3000);
  }

  // ---- the page on screen: when it appeared, which tiles have been seen -------------------
  const page = { id: null, shownAt: 0, seen: new Set(), total: 0, observer: null, dwellMs: cfg.dwellMs };
  window.__hardoodPage = page;  // read by the browser tests and the latency bench
  function pageId() {
    const submit = live(SUBMIT);
    if (submit) {
      const box = submit.closest(`[class*="st-key-${cfg.submitPrefix}"]`);
      return "grid:" + keyClass(box, cfg.submitPrefix);
    }
    const item = live(ITEM);
    return item ? "single:" + keyClass(item, cfg.itemPrefix) : null;
  }
  function main() {
    return doc.querySelector('[data-testid="stMain"]');
  }
  function newPage(id) {
    page.id = id;
    page.shownAt = performance.now();
    page.seen = new Set();
    if (page.observer) page.observer.disconnect();
    page.observer = null;
    if (!id) return;
    // the new page has the keyboard: focus left on a control (the view switch, a button that
    // is gone) would otherwise keep Enter from submitting; text fields keep theirs
    const active = doc.activeElement;
    if (active && active !== doc.body && !typing(active) && active.blur) active.blur();
    const scroller = main();
    if (scroller) scroller.scrollTo({ top: 0, behavior: "instant" });
    window.scrollTo({ top: 0, behavior: "instant" });
    const tiles = cells();
    page.total = id.startsWith("grid:") ? tiles.length : 0;
    page.observer = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        if (entry.intersectionRatio >= 0.9) page.seen.add(entry.target.dataset.hardoodTile);
      }
    }, { threshold: [0.9, 1.0] });
    tiles.forEach((cell, i) => {
      const img = cell.querySelector("img") || cell;
      img.dataset.hardoodTile = String(i);
      page.observer.observe(img);
      // the dwell counts from the moment the images are drawn, not from the first element
      if (img.tagName === "IMG" && !img.complete) {
        img.addEventListener("load", () => { page.shownAt = performance.now(); }, { once: true });
      }
    });
    doc.querySelectorAll("img.pixelated").forEach(fitPixelated);
  }
  let scheduled = false;
  new MutationObserver(() => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      const id = pageId();  // null while a rerun redraws the page: the same page stays on
      if (id && id !== page.id) newPage(id);
      doc.querySelectorAll("img.pixelated:not([data-fitted])").forEach(fitPixelated);
    });
  }).observe(doc.body, { childList: true, subtree: true, attributes: true, attributeFilter: ["data-stale"] });

  // ---- pixel-exact: a small image is enlarged by the largest whole factor that fits --------
  function fitPixelated(img) {
    if (!img.naturalWidth) {
      img.addEventListener("load", () => fitPixelated(img), { once: true });
      return;
    }
    const box = img.parentElement;
    const maxH = parseFloat(getComputedStyle(img).maxHeight) || Infinity;
    const width = box ? box.clientWidth / (img.classList.contains("half") ? 2 : 1) : img.naturalWidth;
    const factor = Math.max(1, Math.floor(Math.min(width / img.naturalWidth, maxH / img.naturalHeight)));
    img.style.width = `${img.naturalWidth * factor}px`;
    img.style.height = `${img.naturalHeight * factor}px`;
    img.dataset.fitted = String(factor);
  }
  window.addEventListener("resize", () => {
    doc.querySelectorAll("img.pixelated").forEach(fitPixelated);
  });

  // ---- may this press or click give a verdict now? -----------------------------------------
  function tooSoon() {
    const waited = performance.now() - page.shownAt;
    if (waited >= cfg.dwellMs) return false;
    hint("Look first: this page appeared " + Math.round(waited) + " ms ago.");
    return true;
  }
  function unseenTiles() {
    const missing = [];
    for (let i = 0; i < page.total; i++) if (!page.seen.has(String(i))) missing.push(i + 1);
    return missing;
  }
  function submitAllowed() {
    if (pageId() !== page.id) return false;  // a new page is being drawn: wait for it
    if (tooSoon()) return false;
    const missing = unseenTiles();
    if (missing.length) {
      hint(`Not submitted: tile(s) ${missing.join(", ")} have not been on screen yet. Scroll to see them.`);
      return false;
    }
    return true;
  }
  // mouse clicks on Submit and on "No foreground" obey the same rules as the keys
  doc.addEventListener("click", (event) => {
    const target = event.target && event.target.closest ? event.target : null;
    if (!target) return;
    const submit = target.closest(SUBMIT);
    const noFg = target.closest(NO_FG);
    if ((submit && !submitAllowed()) || (noFg && tooSoon())) {
      event.preventDefault();
      event.stopImmediatePropagation();
      return;
    }
    // a click on a thumbnail flips its tile; the corner button zooms it
    const zoom = target.closest(".hardood-zoom");
    const cell = target.closest(CELL);
    if (zoom && cell) {
      event.preventDefault();
      openZoom(cell);
      return;
    }
    if (cell && target.closest("img") && fresh(cell)) {
      const box = cell.querySelector('input[type="checkbox"]');
      if (box) box.click();
    }
  }, true);

  // ---- zoom: the tile's images enlarged over the page --------------------------------------
  let zoomed = null;
  function openZoom(source) {
    const images = Array.from(source.querySelectorAll("img.hardood-img"));
    if (!images.length) return;
    closeZoom();
    const box = doc.createElement("div");
    box.id = "hardood-zoom";
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-modal", "true");
    box.setAttribute("aria-label", "Zoomed image (Esc closes)");
    box.tabIndex = -1;
    for (const img of images) {
      const copy = doc.createElement("img");
      copy.src = img.src;
      copy.alt = img.alt;
      copy.className = img.className.replace("half", "");
      copy.removeAttribute("style");
      box.appendChild(copy);
    }
    box.addEventListener("click", closeZoom);
    zoomed = { box, returnTo: doc.activeElement };
    doc.body.appendChild(box);
    box.focus();
  }
  function closeZoom() {
    if (!zoomed) return false;
    const { box, returnTo } = zoomed;
    zoomed = null;
    box.remove();
    if (returnTo && returnTo.focus) returnTo.focus();
    return true;
  }
  let hovered = null;
  doc.addEventListener("mouseover", (event) => {
    hovered = event.target && event.target.closest ? event.target.closest(`${CELL}, ${ITEM}`) : null;
  });

  // ---- keys ----------------------------------------------------------------------------------
  function ours(key) {  // Streamlit's own single-key shortcuts (c: clear cache) must not fire
    return Boolean(cfg.verdicts[key]) || [cfg.undoKey, cfg.camKey, cfg.zoomKey, cfg.goldKey].includes(key)
      || cfg.gridKeys.includes(key);
  }
  function enterTarget(target) {  // Enter submits only from the page body or a tile
    return !target || target === doc.body || target === doc.documentElement || target === main()
      || Boolean(target.closest && target.closest(CELL));
  }
  function widgetFor(key) {
    if (cfg.verdicts[key]) {  // the single view's verdict, else the lead's adjudication
      return live(`[class*="st-key-${cfg.verdictPrefix}${cfg.verdicts[key]}__"] button`)
        || live(`[class*="st-key-${cfg.adjudicatePrefix}${cfg.verdicts[key]}__"] button`);
    }
    if (key === cfg.goldKey) return live(`.st-key-${cfg.goldWidget} button`);
    if (key === cfg.undoKey) return live(`.st-key-${cfg.undoWidget} button`);
    if (key === cfg.camKey) return live(`.st-key-${cfg.camWidget} input`);
    const cell = cfg.gridKeys.indexOf(key);
    if (cell >= 0) return live(`.st-key-${cfg.cellPrefix}${cell} input[type="checkbox"]`);
    return null;
  }
  let lastActivity = performance.now();
  doc.defaultView.addEventListener("keydown", (event) => {
    lastActivity = performance.now();
    if (event.key === "Escape") {
      if (closeZoom()) { event.preventDefault(); event.stopImmediatePropagation(); return; }
      if (typing(event.target)) { event.target.blur(); return; }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (typing(event.target)) return;
    if (event.key === "Enter") {
      if (zoomed || !enterTarget(event.target)) return;  // the focused control handles it
      const submit = live(SUBMIT);
      if (!submit) return;
      event.preventDefault();
      event.stopImmediatePropagation();
      submit.click();  // the click guard above checks the dwell and that every tile was seen
      return;
    }
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (!ours(key)) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    if (key === cfg.zoomKey) {
      if (closeZoom()) return;
      const focused = doc.activeElement && doc.activeElement.closest ? doc.activeElement.closest(CELL) : null;
      const source = focused || hovered || live(ITEM);
      if (source) openZoom(source);
      return;
    }
    if (zoomed) return;
    const widget = widgetFor(key);
    if (widget) widget.click();
  }, true);

  // ---- leases: renewed while the annotator works on the page ---------------------------------
  for (const kind of ["pointerdown", "wheel", "mousemove"]) {
    doc.addEventListener(kind, () => { lastActivity = performance.now(); }, { passive: true });
  }
  if (cfg.renewEveryMs > 0) {
    setInterval(() => {
      if (performance.now() - lastActivity > cfg.renewEveryMs || !page.id) return;
      const renew = live(`.st-key-${cfg.renewWidget} button`);
      if (renew) renew.click();
    }, cfg.renewEveryMs);
  }
})();
