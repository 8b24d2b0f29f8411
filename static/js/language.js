/* The language selector in the header (templates/base.html): choosing a language submits the
   form at once, so its button is hidden; without JavaScript the button submits it. */
(function () {
  "use strict";
  var forms = document.querySelectorAll("form.lang-switch");
  Array.prototype.forEach.call(forms, function (form) {
    var select = form.querySelector("select[data-autosubmit]");
    var button = form.querySelector(".lang-switch-go");
    if (!select) return;
    if (button) button.hidden = true;
    select.addEventListener("change", function () {
      form.submit();
    });
  });
})();
