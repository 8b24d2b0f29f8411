// Copy buttons (the trade room's payment details): a click on [data-copy] puts its value on the
// clipboard and says so on the button and to screen readers. Loaded with the block, which htmx
// may swap in again: the listener is bound once.
(function () {
  "use strict";
  if (window.__copyButtons) return;
  window.__copyButtons = true;

  function announce(button, text) {
    var block = button.closest("section");
    var status = block && block.querySelector("[data-copy-status]");
    if (status) status.textContent = text;
  }

  function done(button, ok) {
    var label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    button.textContent = ok ? "Copied" : "Copy failed";
    button.classList.toggle("copied", ok);
    announce(button, ok ? "Copied to the clipboard." : "Could not copy: select the text instead.");
    window.setTimeout(function () {
      button.textContent = label;
      button.classList.remove("copied");
    }, 2000);
  }

  function fallback(button, value) {
    // Without the Clipboard API (an insecure context): select the value for Ctrl+C instead.
    var target = button.parentElement && button.parentElement.querySelector(".payment-value");
    if (!target) return false;
    var range = document.createRange();
    range.selectNodeContents(target);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    return false;
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) return;
    var value = button.dataset.copy;
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(value).then(
        function () { done(button, true); },
        function () { done(button, fallback(button, value)); }
      );
    } else {
      done(button, fallback(button, value));
    }
  });
})();
