// callkpi wallboard: renders the boards the aggregator pushes.
//
// The page's own ?token=, ?tz= and ?queues= are passed on to api/live (the
// first board) and to events (Server-Sent Events, one "board" event per
// change). Every figure comes from the server; this script only formats it.
// Names from the PBX are set as text, never as HTML.
"use strict";

(function () {
  const STALE_AFTER_MS = 40000; // the server pushes at least every 15 s
  const RETRY_MS = 5000;

  const own = new URLSearchParams(window.location.search);
  const pass = new URLSearchParams();
  for (const key of ["token", "tz", "queues"]) {
    const v = own.get(key);
    if (v) pass.set(key, v);
  }
  const query = pass.toString() ? "?" + pass.toString() : "";
  const byId = (id) => document.getElementById(id);
  let lastBoardAt = 0;
  let source = null;

  function setStatus(state, text) {
    const s = byId("status");
    s.dataset.state = state;
    s.textContent = text;
    document.body.classList.toggle("stale", state === "stale" || state === "refused" || state === "error");
  }

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function pct(v) {
    return v === null || v === undefined ? "–" : v.toFixed(1) + "%";
  }

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, "0");
    return h > 0 ? h + ":" + String(m).padStart(2, "0") + ":" + ss : m + ":" + ss;
  }

  function ago(seconds) {
    if (seconds < 120) return Math.round(seconds) + " s";
    if (seconds < 7200) return Math.round(seconds / 60) + " min";
    if (seconds < 172800) return Math.round(seconds / 3600) + " h";
    return Math.round(seconds / 86400) + " days";
  }

  // One figure: a label above a big value. `field` names the JSON field it shows.
  function tile(label, field, text, status) {
    const t = el("div", "tile");
    if (status) t.dataset.status = status;
    t.appendChild(el("span", "label", label));
    const v = el("span", "value", text);
    v.dataset.field = field;
    t.appendChild(v);
    return t;
  }

  function count(label, field, n) {
    const c = el("span", "count", label + " ");
    const b = el("b", null, String(n));
    b.dataset.field = field;
    c.appendChild(b);
    return c;
  }

  function queueCard(q, board) {
    const headline = board.sl_thresholds_s[0];
    const card = el("section", "queue");
    card.dataset.queue = q.queue;
    card.appendChild(el("h2", null, q.queue));

    const main = el("div", "row main");
    const waiting = tile("Waiting", "calls_waiting", String(q.calls_waiting),
      q.calls_waiting > 0 ? "amber" : null);
    main.appendChild(waiting);
    const longest = tile("Longest wait", "longest_wait_s", duration(q.longest_wait_s),
      q.longest_wait_s > headline ? "red" : null);
    longest.querySelector(".value").dataset.seconds = String(q.longest_wait_s);
    main.appendChild(longest);
    main.appendChild(tile("Service level " + headline + " s today", "service_level_today_pct",
      pct(q.service_level_today_pct), q.service_level_status === "none" ? null : q.service_level_status));
    main.appendChild(tile("Abandoned today", "abandonment_today_pct",
      pct(q.abandonment_today_pct), q.abandonment_status === "none" ? null : q.abandonment_status));
    card.appendChild(main);

    const agents = el("div", "row agents");
    agents.appendChild(tile("Available", "agents_available", String(q.agents_available)));
    agents.appendChild(tile("On call", "agents_busy", String(q.agents_busy)));
    agents.appendChild(tile("Wrap-up", "agents_wrapup", String(q.agents_wrapup)));
    agents.appendChild(tile("Paused", "agents_paused", String(q.agents_paused)));
    card.appendChild(agents);

    const counts = el("div", "counts");
    counts.appendChild(count("Offered today", "offered_today", q.offered_today));
    counts.appendChild(count("Answered today", "answered_today", q.answered_today));
    for (const t of board.sl_thresholds_s.slice(1)) {
      const v = q.service_levels_today_pct[String(t)];
      const c = count("SL " + t + " s", "service_level_" + t + "_today_pct", pct(v));
      counts.appendChild(c);
    }
    card.appendChild(counts);
    return card;
  }

  function render(board) {
    lastBoardAt = Date.now();
    setStatus("live", "live");
    document.title = board.title + " – wallboard";
    byId("title").textContent = board.title;
    byId("clock").textContent = board.time;
    byId("date").textContent = board.date + " · " + board.time_zone;

    const banner = byId("behind");
    const list = byId("behind-list");
    const items = board.behind.map((b) => {
      const li = el("li", null);
      li.dataset.agent = b.agent_id;
      const who = b.site ? b.site + " (" + b.agent_id + ")" : b.agent_id;
      li.textContent = b.never_delivered ? who + ": nothing received yet" : who + ": " + ago(b.lag_s) + " behind";
      return li;
    });
    list.replaceChildren(...items);
    banner.hidden = items.length === 0;

    const cards = board.queues.map((q) => queueCard(q, board));
    byId("queues").replaceChildren(...cards);
    byId("empty").hidden = cards.length > 0;

    const c = board.colours;
    const headline = board.sl_thresholds_s[0];
    const unknown = board.unknown_queues.length === 0 ? "" :
      "No queue named " + board.unknown_queues.join(", ") + " today. ";
    byId("legend").textContent = unknown +
      "Waiting: amber while a caller waits. Longest wait: red above " + headline + " s. " +
      "Service level: green ≥ " + c.sl_green_pct + "%, amber ≥ " + c.sl_amber_pct + "%, red below. " +
      "Abandoned: red ≥ " + c.abandon_red_pct + "%, amber ≥ " + c.abandon_amber_pct + "%, green below. " +
      "Today starts at midnight " + board.time_zone + ".";
  }

  function refused(response) {
    setStatus(response.status === 401 ? "refused" : "error",
      response.status === 401 ? "access refused" : "HTTP " + response.status);
    byId("empty").hidden = false;
    byId("empty").textContent =
      response.status === 401
        ? "Access refused: open this page with ?token=<reader token> in its address."
        : "The wallboard cannot show this view (HTTP " + response.status + ").";
  }

  function connect() {
    if (source) source.close();
    source = new EventSource("events" + query);
    source.addEventListener("board", (e) => {
      try {
        render(JSON.parse(e.data));
      } catch (err) {
        setStatus("error", "bad data from server");
      }
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused or gone: the browser will not retry by itself.
        setStatus("reconnecting", "reconnecting…");
        window.setTimeout(start, RETRY_MS);
      } else {
        setStatus("reconnecting", "reconnecting…");
      }
    };
  }

  function start() {
    fetch("api/live" + query, { cache: "no-store" })
      .then((response) => {
        if (!response.ok) {
          refused(response);
          if (response.status >= 500) window.setTimeout(start, RETRY_MS);
          return;
        }
        return response.json().then((board) => {
          render(board);
          connect();
        });
      })
      .catch(() => {
        setStatus("reconnecting", "server unreachable, retrying…");
        window.setTimeout(start, RETRY_MS);
      });
  }

  window.setInterval(() => {
    if (lastBoardAt && Date.now() - lastBoardAt > STALE_AFTER_MS) {
      setStatus("stale", "no update for " + ago((Date.now() - lastBoardAt) / 1000));
    }
  }, 5000);

  start();
})();
