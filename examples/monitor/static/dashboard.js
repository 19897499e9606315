// The dashboard: live statuses, latencies and charts over server-sent events.
(function () {
  "use strict";

  const config = window.MONITOR;
  const list = document.getElementById("monitors");
  const empty = document.getElementById("empty");
  const template = document.getElementById("monitor-template");
  const connection = document.getElementById("connection");
  const monitors = new Map(); // id -> {data, checks, el}

  function ago(seconds) {
    if (seconds < 2) return "just now";
    if (seconds < 60) return Math.round(seconds) + " s ago";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    return Math.round(seconds / 3600) + " h ago";
  }

  function render(entry) {
    const { data, checks, el } = entry;
    el.className = "monitor card status-" + data.status;
    el.querySelector(".badge").textContent = data.status;
    el.querySelector(".name").textContent = data.name;
    const url = el.querySelector(".url");
    url.textContent = data.url;
    url.href = data.url;
    el.querySelector(".every").textContent = data.interval + " s";
    el.querySelector(".latency").textContent =
      data.last_latency_ms == null ? "–" : Math.round(data.last_latency_ms) + " ms";
    el.querySelector(".reason").textContent = data.last_error || "";
    const up = checks.filter((c) => c.ok).length;
    el.querySelector(".uptime").textContent = checks.length
      ? ((100 * up) / checks.length).toFixed(checks.length >= 100 ? 1 : 0) + " %"
      : "–";
    el.querySelector(".uptime").title = "of the last " + checks.length + " checks";
    renderAge(entry);
    window.drawLatencyChart(el.querySelector("canvas"), checks, config.chartPoints);
  }

  function renderAge(entry) {
    const at = entry.data.last_checked_at;
    entry.el.querySelector(".checked").textContent =
      at ? ago(Date.now() / 1000 - at) : "not yet";
  }

  function add(data, checks) {
    if (monitors.has(data.id)) return monitors.get(data.id);
    let el = list.querySelector('[data-id="' + data.id + '"]');
    if (!el) {
      el = template.content.firstElementChild.cloneNode(true);
      el.dataset.id = data.id;
      el.querySelector("form.delete").action = config.deleteUrl.replace(/0\/delete$/, data.id + "/delete");
      list.appendChild(el);
    }
    const entry = { data, checks: checks || [], el };
    monitors.set(data.id, entry);
    empty.hidden = true;
    render(entry);
    return entry;
  }

  function remove(id) {
    const entry = monitors.get(id);
    if (!entry) return;
    entry.el.remove();
    monitors.delete(id);
    empty.hidden = monitors.size > 0;
  }

  for (const item of JSON.parse(document.getElementById("initial-data").textContent)) {
    const { checks, ...data } = item;
    add(data, checks);
  }

  // Live updates. EventSource reconnects by itself; on reconnection the page state is
  // reloaded from the API so that nothing missed while offline stays stale.
  let opened = false;
  const source = new EventSource(config.events);
  source.addEventListener("ready", () => {
    connection.textContent = "live";
    connection.className = "conn live";
    if (opened) resync();
    opened = true;
  });
  source.onerror = () => {
    connection.textContent = "reconnecting";
    connection.className = "conn connecting";
  };
  source.addEventListener("check", (event) => {
    const { monitor, check } = JSON.parse(event.data);
    const entry = monitors.get(monitor.id) || add(monitor, []);
    entry.data = monitor;
    entry.checks.push(check);
    if (entry.checks.length > config.chartPoints) entry.checks.shift();
    render(entry);
  });
  source.addEventListener("monitor-added", (event) => add(JSON.parse(event.data), []));
  source.addEventListener("monitor-deleted", (event) => remove(JSON.parse(event.data).id));

  async function resync() {
    const response = await fetch("/api/monitors", { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const { monitors: fresh } = await response.json();
    const ids = new Set(fresh.map((m) => m.id));
    for (const id of [...monitors.keys()]) if (!ids.has(id)) remove(id);
    for (const data of fresh) {
      const entry = add(data, []);
      entry.data = data;
      render(entry);
    }
  }

  setInterval(() => monitors.forEach(renderAge), 1000);
  window.addEventListener("resize", () => monitors.forEach(render));

  // Add an endpoint without leaving the page (a plain post and redirect without JS).
  const form = document.getElementById("add-form");
  const errors = document.getElementById("add-errors");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.querySelectorAll("small.error").forEach((e) => e.remove());
    form.querySelectorAll(".has-error").forEach((e) => e.classList.remove("has-error"));
    errors.hidden = true;
    const response = await fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { "X-Requested-With": "fetch", Accept: "application/json" },
    });
    const body = await response.json().catch(() => ({}));
    if (response.status === 201) {
      add(body, []);
      form.reset();
      return;
    }
    const fieldErrors = body.errors || {};
    let shown = false;
    for (const [name, messages] of Object.entries(fieldErrors)) {
      const input = form.querySelector('[name="' + name + '"]');
      if (!input || input.type === "hidden") continue;
      const small = document.createElement("small");
      small.className = "error";
      small.textContent = messages.join(" ");
      input.closest("label").classList.add("has-error");
      input.closest("label").appendChild(small);
      shown = true;
    }
    if (!shown) {
      errors.textContent = "Could not add it (" + response.status + "). Reload the page and try again.";
      errors.hidden = false;
    }
  });

  // Remove without leaving the page, too.
  list.addEventListener("submit", async (event) => {
    const target = event.target;
    if (!target.classList.contains("delete")) return;
    event.preventDefault();
    const response = await fetch(target.action, { method: "POST", body: new FormData(target) });
    if (response.ok) remove(Number(target.closest(".monitor").dataset.id));
  });
})();
