/* Confirmation panels by keyboard (issue 20, point 7). A `<details class="confirm">` asks "are
   you sure?" before a step that can't be undone (mark paid, release, cancel, dispute, delete an
   offer, the lending moves). Opened from its summary (Enter or Space), it takes the focus to its
   first field or button; Tab and Shift+Tab then go round inside it (its summary included, so
   Enter there closes it again) instead of wandering off into the page; Escape closes it and
   gives the focus back to the summary (static/js/app.js). Only one is open at a time. Without
   JavaScript the panels still open and submit; they just don't hold the focus. */
(function () {
  "use strict";

  var FOCUSABLE = "a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), " +
    "select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex='-1'])";

  function visible(el) {
    return !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  }

  /* The summary first, then what the open panel holds, in document order. */
  function stops(details) {
    var summary = details.querySelector(":scope > summary");
    var inside = Array.prototype.filter.call(details.querySelectorAll(FOCUSABLE), function (el) {
      return el !== summary && visible(el);
    });
    return summary ? [summary].concat(inside) : inside;
  }

  // "toggle" does not bubble: listen in the capture phase for every panel, present or swapped in.
  document.addEventListener("toggle", function (event) {
    var details = event.target;
    if (!(details instanceof HTMLDetailsElement) || !details.classList.contains("confirm")) return;
    if (!details.open) return;
    // Only when the person opened it (the focus is on its summary): a panel that the server sent
    // back open, with a form error in it, leaves the focus and the other panels alone.
    var summary = details.querySelector(":scope > summary");
    if (!summary || document.activeElement !== summary) return;
    document.querySelectorAll("details.confirm[open]").forEach(function (other) {
      if (other !== details) other.open = false;
    });
    var first = stops(details)[1];
    if (first) first.focus();
  }, true);

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Tab" || event.altKey || event.ctrlKey || event.metaKey) return;
    var active = document.activeElement;
    var details = active && active.closest ? active.closest("details.confirm[open]") : null;
    if (!details) return;
    var ring = stops(details);
    if (ring.length < 2) return;
    var at = ring.indexOf(active);
    if (event.shiftKey && at <= 0) {
      event.preventDefault();
      ring[ring.length - 1].focus();
    } else if (!event.shiftKey && at === ring.length - 1) {
      event.preventDefault();
      ring[0].focus();
    }
  });
})();
