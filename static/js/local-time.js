/* Times in the user's own zone, and countdowns to a moment. Every page works without this file:
   times are rendered by the server (in the zone stored on the profile, UTC until one is). */
(function () {
  "use strict";

  /* Report the browser's zone once per zone: after that the server renders every time in it.
     A zone chosen by hand on the settings page stays until the browser's own zone changes. */
  var meta = document.querySelector('meta[name="user-time-zone"]');
  var zone = "";
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
  if (meta && zone && zone !== meta.content) {
    var flag = "time-zone-reported:" + (meta.dataset.user || "");
    var reported = null;
    try { reported = window.localStorage.getItem(flag); } catch (e) { reported = null; }
    var token = document.querySelector('input[name="csrfmiddlewaretoken"]');
    if (reported !== zone && token && window.fetch) {
      window.fetch(meta.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": token.value, "X-Requested-With": "fetch" },
        body: new URLSearchParams({ time_zone: zone })
      }).then(function (response) {
        if (response.status >= 500) return; // try again on a later page
        try { window.localStorage.setItem(flag, zone); } catch (e) { /* private mode */ }
        if (response.ok) {
          meta.content = zone;
          document.documentElement.dataset.timeZoneSaved = zone;
        }
      }).catch(function () { /* offline: try again on a later page */ });
    }
  }

  /* Countdowns: an element with data-countdown-to (seconds since the epoch) says "in m:ss"
     (its data-countdown-template, "in {time}" by default) until then, and its
     data-countdown-done text after. Re-found every tick, so htmx swaps of
     the trade room need nothing special. */
  function pad(n) { return n < 10 ? "0" + n : String(n); }
  function tick() {
    document.querySelectorAll("[data-countdown-to]").forEach(function (el) {
      var left = Math.ceil(Number(el.dataset.countdownTo) - Date.now() / 1000);
      if (!(left > 0)) {
        el.textContent = el.dataset.countdownDone || "now";
        return;
      }
      var h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
      // The words around the time come from the page, in its language (issue 20).
      var left_text = (h ? h + ":" + pad(m) : m) + ":" + pad(s);
      el.textContent = (el.dataset.countdownTemplate || "in {time}").replace("{time}", left_text);
    });
  }
  tick();
  window.setInterval(tick, 1000);
})();
