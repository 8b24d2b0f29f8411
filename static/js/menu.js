/* The main menu on narrow screens: the "Menu" button shows and hides the nav (aria-expanded
   says which); Escape closes it and gives the focus back to the button. Wide screens show the
   nav as a row and hide the button (static/css/app.css, "main menu"). Without JavaScript,
   css/menu-noscript.css shows the nav and hides the button. */
(function () {
  "use strict";
  var button = document.querySelector(".nav-toggle");
  var header = document.querySelector(".site-header");
  if (!button || !header) return;

  function setOpen(open) {
    button.setAttribute("aria-expanded", open ? "true" : "false");
    header.classList.toggle("menu-open", open);
  }

  button.addEventListener("click", function () {
    setOpen(button.getAttribute("aria-expanded") !== "true");
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || button.getAttribute("aria-expanded") !== "true") return;
    setOpen(false);
    button.focus();
  });
  // A click outside the header closes an open menu, as it closes the user menu.
  document.addEventListener("click", function (event) {
    if (button.getAttribute("aria-expanded") === "true" && !header.contains(event.target)) {
      setOpen(false);
    }
  });
})();
