"""Layout checks run in the page: what sticks out of its container sideways, text that overlaps
other text, and words the layout broke across lines. Each returns a list of problems (empty:
fine), named by a short CSS path, so a failing test says where to look."""

from __future__ import annotations

from playwright.sync_api import Page

# One script for all three checks (a page is measured once per width).
#
# Overflow: a visible element whose border box reaches past its parent's border box on the left
# or the right, unless an ancestor up to that parent clips or scrolls sideways (a table wrapper,
# the chat list) or the element is out of the flow on purpose (absolute, fixed, sr-only).
# Overlap: the boxes of text nodes (Range.getClientRects, one per line fragment), clipped by
# their scrolling ancestors, that intersect a box of another text node by more than 2 px both
# ways. Boxes of the same node are never compared (its lines touch by design).
# Broken words: a short word of letters (at most 14) whose letters sit on two lines, like
# "Complet/ed", and a text of three or more words shown one word per line.
LAYOUT_JS = r"""
() => {
  // Measured from the top: the sticky header covers scrolled content by design.
  window.scrollTo(0, 0);
  const problems = { overflow: [], overlap: [], broken: [] };
  const path = (el) => {
    const parts = [];
    for (let e = el; e && e !== document.body && parts.length < 4; e = e.parentElement) {
      let p = e.tagName.toLowerCase();
      if (e.id) { parts.unshift(p + "#" + e.id); break; }
      const cls = [...e.classList].slice(0, 2).join(".");
      if (cls) p += "." + cls;
      parts.unshift(p);
    }
    return parts.join(" > ");
  };
  // checkVisibility also knows the content of a closed <details>, which has boxes but no paint.
  const visible = (el) => {
    if (!el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true })) return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const outOfFlow = (el) => {
    for (let e = el; e && e !== document.body; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.position === "absolute" || s.position === "fixed") return true;
      if (e.classList.contains("sr-only") || e.classList.contains("skip-link")) return true;
    }
    return false;
  };
  // A sideways scroller (a wide table's wrapper) may hold wider content; a box that merely
  // hides what sticks out (overflow: hidden) hides text a reader needs, so it still counts.
  const clipsX = (el) => {
    const o = getComputedStyle(el).overflowX;
    return o === "auto" || o === "scroll";
  };
  const all = [...document.querySelectorAll("header *, main *, footer *")];

  // --- overflow ---
  for (const el of all) {
    const parent = el.parentElement;
    if (!parent || !visible(el) || outOfFlow(el)) continue;
    if (el.tagName === "OPTION" || el.closest("svg")) continue;
    const r = el.getBoundingClientRect(), pr = parent.getBoundingClientRect();
    if (clipsX(parent)) continue;
    const over = Math.max(r.right - pr.right, pr.left - r.left);
    if (over > 1) {
      problems.overflow.push(`${path(el)} sticks out of ${path(parent)} by ${Math.round(over)}px`);
    }
  }
  const page = document.documentElement.scrollWidth - window.innerWidth;
  if (page > 0) {
    const out = [...document.querySelectorAll("body *")]
      .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1)
      .slice(-4).map(path).join("; ");
    problems.overflow.push(`the page scrolls sideways by ${page}px (past the edge: ${out})`);
  }

  // --- text boxes ---
  const clipOf = (el) => {
    let box = { left: -1e9, top: -1e9, right: 1e9, bottom: 1e9 };
    for (let e = el; e && e !== document.documentElement; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.overflowX !== "visible" || s.overflowY !== "visible") {
        const r = e.getBoundingClientRect();
        box = {
          left: Math.max(box.left, r.left), top: Math.max(box.top, r.top),
          right: Math.min(box.right, r.right), bottom: Math.min(box.bottom, r.bottom),
        };
      }
    }
    return box;
  };
  const boxes = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let node, n = 0;
  while ((node = walker.nextNode())) {
    const text = node.textContent;
    if (!text.trim()) continue;
    const el = node.parentElement;
    if (!el || !visible(el) || outOfFlow(el) || el.closest("script, style, noscript, title")) continue;
    if (!el.closest("header, main, footer")) continue;
    const id = n++;
    const clip = clipOf(el);
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const r of range.getClientRects()) {
      const b = {
        left: Math.max(r.left, clip.left), top: Math.max(r.top, clip.top),
        right: Math.min(r.right, clip.right), bottom: Math.min(r.bottom, clip.bottom),
      };
      if (b.right - b.left < 1 || b.bottom - b.top < 1) continue;
      boxes.push({ id, b, el, text: text.trim().slice(0, 30) });
    }
    // broken words: every word of letters, where it starts and ends
    // (overflow-wrap: anywhere is no excuse: it exists for long tokens, not for "Complet/ed")
    if (el.closest(".break, .mono, code")) continue;
    const re = /\p{L}{2,14}/gu;
    let m;
    while ((m = re.exec(text))) {
      const w = document.createRange();
      w.setStart(node, m.index);
      w.setEnd(node, m.index + m[0].length);
      const tops = new Set([...w.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top)));
      if (tops.size > 1) problems.broken.push(`"${m[0]}" is broken across lines in ${path(el)}`);
    }
    const words = text.trim().split(/\s+/);
    if (words.length >= 3) {
      const lines = new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top)));
      if (lines.size >= words.length) {
        problems.broken.push(`"${text.trim().slice(0, 40)}" shows one word per line in ${path(el)}`);
      }
    }
  }
  const seen = new Set();
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i], c = boxes[j];
      if (a.id === c.id) continue;
      const w = Math.min(a.b.right, c.b.right) - Math.max(a.b.left, c.b.left);
      const h = Math.min(a.b.bottom, c.b.bottom) - Math.max(a.b.top, c.b.top);
      if (w > 2 && h > 2) {
        const key = a.id + ":" + c.id;
        if (seen.has(key)) continue;
        seen.add(key);
        problems.overlap.push(`"${a.text}" (${path(a.el)}) overlaps "${c.text}" (${path(c.el)})`);
      }
    }
  }
  return problems;
}
"""


def layout_problems(page: Page, name: str) -> list[str]:
    """Everything wrong with the page's layout at its current width, each line naming the page."""
    found = page.evaluate(LAYOUT_JS)
    return [
        f"{name}: {kind}: {p}" for kind in ("overflow", "overlap", "broken") for p in found[kind]
    ]
