/* EscrowP2P: small progressive enhancements. Every page works without this file. */
(function () {
  "use strict";

  /* One submit per click: forms marked data-once disable their buttons once submitted.
     (The server is the real guard: each trade action carries the state it expects.) */
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-once")) return;
    if (form.dataset.submitted) {
      event.preventDefault();
      return;
    }
    form.dataset.submitted = "1";
    // Disable after the browser has collected the form data.
    setTimeout(function () {
      form.querySelectorAll("button[type=submit], button:not([type])").forEach(function (b) {
        b.disabled = true;
        b.setAttribute("aria-busy", "true");
      });
    }, 0);
  });
  // Coming back with the Back button shows the page from cache: make its buttons usable again.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    document.querySelectorAll("form[data-once]").forEach(function (form) {
      delete form.dataset.submitted;
      form.querySelectorAll("button").forEach(function (b) {
        b.disabled = false;
        b.removeAttribute("aria-busy");
      });
    });
  });

  /* The user menu closes on a click elsewhere or on Escape, like any menu. */
  document.addEventListener("click", function (event) {
    document.querySelectorAll("details.dropdown[open]").forEach(function (menu) {
      if (!menu.contains(event.target)) menu.open = false;
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    document.querySelectorAll("details.dropdown[open], details.confirm[open]").forEach(function (d) {
      d.open = false;
      var summary = d.querySelector("summary");
      if (summary && d.contains(document.activeElement)) summary.focus();
    });
  });

  /* Payment countdowns (re-found every tick, so htmx swaps need nothing special). */
  function pad(n) { return n < 10 ? "0" + n : String(n); }
  function tick() {
    document.querySelectorAll("[data-deadline-ts]").forEach(function (el) {
      var left = Math.floor(Number(el.dataset.deadlineTs) - Date.now() / 1000);
      if (left <= 0) {
        el.textContent = "Time is up";
        el.classList.add("late");
        return;
      }
      var h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
      el.textContent = (h ? h + ":" + pad(m) : m) + ":" + pad(s) + " left to pay";
      el.classList.toggle("urgent", left < 300);
    });
  }
  tick();
  setInterval(tick, 1000);

  /* Decimal helpers for previews only; the server computes every real amount exactly. */
  function group(n, places) {
    return n.toLocaleString("en-US", { minimumFractionDigits: places, maximumFractionDigits: places });
  }
  function readJSON(id) {
    var el = document.getElementById(id);
    try { return el ? JSON.parse(el.textContent) : {}; } catch (e) { return {}; }
  }

  /* Take form: the server takes the fiat amount or the asset amount, so typing in one clears
     the other. The breakdown (price, fees, totals) comes from the server through htmx
     (escrow.views.offer_quote); no money is computed here. */
  var take = document.getElementById("take-form");
  if (take) {
    var fiatIn = take.querySelector("[name=fiat_amount]"), assetIn = take.querySelector("[name=amount]");
    [fiatIn, assetIn].forEach(function (input) {
      if (!input) return;
      input.addEventListener("input", function () {
        var other = input === fiatIn ? assetIn : fiatIn;
        if (other && input.value.trim() !== "") other.value = "";
      });
    });
  }

  /* Amounts are shown rounded to the asset's display precision; copying one (a selection inside
     one amount) copies the exact amount its data-exact carries. */
  document.addEventListener("copy", function (event) {
    var sel = window.getSelection();
    if (!sel || sel.rangeCount === 0 || !event.clipboardData) return;
    var node = sel.getRangeAt(0).commonAncestorContainer;
    var el = node.nodeType === 1 ? node : node.parentElement;
    var amount = el && el.closest ? el.closest(".amount[data-exact]") : null;
    if (!amount) return;
    event.clipboardData.setData("text/plain", amount.dataset.exact);
    event.preventDefault();
  });

  /* Offer form: show the fields of the price type, preview a floating price, hint the balance. */
  var offer = document.getElementById("offer-form");
  if (offer) {
    var index = readJSON("price-index"), balances = readJSON("balances");
    var assetSel = offer.querySelector("#id_asset"), fiatSel = offer.querySelector("#id_fiat");
    var side = function () {
      var fixed = document.getElementById("id_side_fixed");
      if (fixed) return fixed.value;
      var checked = offer.querySelector("[name=side]:checked");
      return checked ? checked.value : "sell";
    };
    var priceType = function () {
      var checked = offer.querySelector("[name=price_type]:checked");
      return checked ? checked.value : "fixed";
    };
    var refresh = function () {
      var asset = assetSel ? assetSel.value : "", fiat = fiatSel ? fiatSel.value : "";
      var floating = priceType() === "floating";
      offer.querySelectorAll(".price-fixed").forEach(function (el) { el.hidden = floating; });
      offer.querySelectorAll(".price-floating").forEach(function (el) { el.hidden = !floating; });
      ["price", "min_fiat", "max_fiat"].forEach(function (n) {
        var s = offer.querySelector('[data-suffix-for="' + n + '"]');
        if (s) s.textContent = fiat;
      });
      var s = offer.querySelector('[data-suffix-for="amount"]');
      if (s) s.textContent = asset;
      var out = document.getElementById("price-preview");
      var base = index[asset + "/" + fiat];
      if (floating) {
        var margin = Number(String((offer.querySelector("[name=margin_percent]") || {}).value || "0").replace(",", "."));
        if (!base) out.textContent = "There is no " + asset + "/" + fiat + " market index: use a fixed price.";
        else if (isNaN(margin)) out.textContent = "";
        else out.innerHTML = "Market index " + group(Number(base), 2) + " " + fiat + " → your price now ≈ <strong>" +
          group(Number(base) * (1 + margin / 100), 2) + " " + fiat + "</strong> per " + asset + ", following the market.";
      } else {
        out.textContent = base ? "Market index: " + group(Number(base), 2) + " " + fiat + " per " + asset + "." : "";
      }
      var hint = document.getElementById("balance-hint");
      if (hint) {
        hint.textContent = side() === "sell"
          ? "You hold " + (balances[asset] || "0") + " " + asset + " available; a sell offer can't offer more."
          : "";
      }
    };
    offer.addEventListener("input", refresh);
    offer.addEventListener("change", refresh);
    refresh();
  }

  /* Withdrawal form: show what is available of the chosen asset. */
  var wd = document.getElementById("withdraw-form");
  if (wd) {
    var bal = readJSON("balances");
    var sel = wd.querySelector("[name=asset]"), hint = document.getElementById("withdraw-hint");
    /* The network fee of the chosen asset (issue 19: the estimated gas): shown before confirming,
       and sent back as max_fee so that a higher fee at request time is refused, never charged. */
    var fees = readJSON("withdrawal-fees") || {}, feeLine = document.getElementById("withdraw-fee");
    var maxFee = wd.querySelector("[name=max_fee]");
    var show = function () {
      hint.textContent = sel && bal[sel.value] !== undefined ? "Available: " + bal[sel.value] + " " + sel.value : "";
      var fee = sel ? fees[sel.value] : "";
      if (feeLine) {
        feeLine.textContent = fee
          ? "Network fee: " + fee + " " + sel.value + " (the estimated gas), held with the amount."
          : fee === null ? "The network fee can't be quoted right now." : "";
      }
      if (maxFee) maxFee.value = fee || "";
    };
    if (sel) sel.addEventListener("change", show);
    show();
  }
})();
