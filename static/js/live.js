/* Live push (issue 18): one WebSocket per logged-in page (notifications/live). The socket says
   what changed, by id and name; the page asks the server for the affected parts through htmx,
   the same views and checks as a reload. While the socket is up, the every-3s polls of the trade
   room and the chat are not sent; while it is down they run as before, and it reconnects with
   backoff, resuming from the last event id it saw (nothing missed in between). A small
   indicator in the header says "Live" or "Reconnecting…". */
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="live-socket"]');
  if (!meta || !window.WebSocket || !window.htmx) return;

  var url = meta.content;
  if (url.charAt(0) === "/") {
    url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + url;
  }
  var lastId = meta.dataset.lastId || "";
  /* The indicator's texts, translated by the page ({% live_socket %}); English without them. */
  var text = {
    connecting: meta.dataset.textConnecting || "Connecting…",
    live: meta.dataset.textLive || "Live",
    reconnecting: meta.dataset.textReconnecting || "Reconnecting…",
    titleLive: meta.dataset.titleLive || "Updates arrive as they happen",
    titleReconnecting: meta.dataset.titleReconnecting ||
      "Updates every few seconds until the live connection is back"
  };
  /* The badge's spoken label, as the page header's: the language's forms of "N unread" and,
     one digit a count from 1 to 99, which form it takes (the server applied the plural rule). */
  var unreadForms = [];
  try { unreadForms = JSON.parse(meta.dataset.unreadForms || "[]"); } catch (e) { unreadForms = []; }
  var unreadPlural = meta.dataset.unreadPlural || "";
  function unreadLabel(count) {
    if (count > 99) return meta.dataset.textUnreadMany || "More than 99 unread";
    var form = unreadForms[Number(unreadPlural.charAt(count - 1) || 0)] || "%(counter)s unread";
    return form.replace("%(counter)s", String(count));
  }
  var socket = null;
  var live = false;
  var attempts = 0;
  var everConnected = false;

  /* The indicator, next to the user menu. */
  var indicator = document.createElement("span");
  indicator.className = "live-status";
  indicator.setAttribute("role", "status");
  indicator.dataset.state = "connecting";
  indicator.textContent = text.connecting;
  var slot = document.querySelector(".header-inner .user-menu");
  if (slot && slot.parentNode) slot.parentNode.insertBefore(indicator, slot);

  function show(state) {
    indicator.dataset.state = state;
    indicator.textContent = state === "live" ? text.live : text.reconnecting;
    indicator.title = state === "live" ? text.titleLive : text.titleReconnecting;
    document.documentElement.dataset.live = state;
  }

  /* Polls (hx-trigger "every 3s") of elements marked data-live-poll are not sent while live;
     the refreshes this module asks for (the "live-refresh" event) are. */
  document.body.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    var config = event.detail.requestConfig || {};
    if (live && elt && elt.hasAttribute && elt.hasAttribute("data-live-poll") && !config.triggeringEvent) {
      event.preventDefault();
    }
  });

  function refresh(selector) {
    var elt = document.querySelector(selector);
    if (elt) htmx.trigger(elt, "live-refresh");
  }

  var bookBusy = false, bookAgain = false;
  function refreshBook() {
    var book = document.getElementById("order-book");
    if (!book) return;
    if (bookBusy) { bookAgain = true; return; }
    bookBusy = true;
    htmx.ajax("GET", location.pathname + location.search, {
      target: "#order-book", select: "#order-book", swap: "outerHTML"
    }).finally(function () {
      bookBusy = false;
      if (bookAgain) { bookAgain = false; refreshBook(); }
    });
  }

  function refreshAll() {
    refresh("[data-live-trade]");
    refresh("#chat-list[data-live-poll]");
    refreshBook();
  }

  function setBadge(count) {
    var link = document.querySelector('#main-nav a[href="' + meta.dataset.notificationsUrl + '"]');
    if (!link) return;
    var badge = link.querySelector(".badge-count");
    if (!count) { if (badge) badge.remove(); return; }
    if (!badge) {
      badge = document.createElement("span");
      badge.className = "badge badge-count";
      link.appendChild(document.createTextNode(" "));
      link.appendChild(badge);
    }
    // The server counts up to 100: past 99 the badge says "99+" (as the page's header does).
    var many = count > 99;
    badge.textContent = many ? "99+" : String(count);
    badge.setAttribute("aria-label", unreadLabel(count));
  }

  function apply(message) {
    if (message.type === "event") {
      if (message.id) {
        lastId = message.id;
        // The resume point, where a person (or a test) can read it.
        document.documentElement.dataset.liveLast = lastId;
      }
      if (typeof message.unread === "number") setBadge(message.unread);
      var room = document.querySelector("[data-live-trade]");
      if (message.trade && room && String(message.trade) === room.dataset.liveTrade) {
        if (message.event === "trade.message") refresh("#chat-list[data-live-poll]");
        else refresh("[data-live-trade]");
      }
    } else if (message.type === "book") {
      var book = document.getElementById("order-book");
      // The book's filters: a blank one shows every asset (or currency).
      if (book && (!book.dataset.liveAsset || book.dataset.liveAsset === message.asset) &&
          (!book.dataset.liveFiat || book.dataset.liveFiat === message.fiat)) refreshBook();
    } else if (message.type === "gap") {
      refreshAll();
    }
  }

  function connect() {
    var target = url + (lastId ? (url.indexOf("?") < 0 ? "?" : "&") + "after=" + encodeURIComponent(lastId) : "");
    try {
      socket = new WebSocket(target);
    } catch (e) {
      retry();
      return;
    }
    socket.onopen = function () {
      live = true;
      attempts = 0;
      show("live");
      if (document.getElementById("order-book")) {
        socket.send(JSON.stringify({ type: "subscribe", group: "book" }));
      }
      // Back after a drop: the stream replays what was missed; the book (not stored) and
      // anything the polls did meanwhile are redrawn once.
      if (everConnected) refreshBook();
      everConnected = true;
    };
    socket.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      apply(message);
    };
    socket.onclose = function () {
      live = false;
      socket = null;
      show("reconnecting");
      retry();
    };
  }

  function retry() {
    // 0.5 s, 1 s, 2 s ... up to 15 s, with jitter so a restarted server isn't hit all at once.
    var delay = Math.min(15000, 500 * Math.pow(2, attempts)) * (0.75 + Math.random() * 0.5);
    attempts += 1;
    setTimeout(connect, delay);
  }

  window.addEventListener("pagehide", function () {
    if (socket) { socket.onclose = null; socket.close(); }
  });
  connect();
})();
