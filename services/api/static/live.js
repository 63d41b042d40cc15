// The live page: follows GET /jobs/stream, then plots GET /results (see services/api/live.py).
"use strict";

(() => {
  const jobId = new URLSearchParams(window.location.search).get("job_id");
  const tasks = new Map();  // task_id -> the task entry of GET /jobs/direct
  let job = null;           // the latest job-level fields
  let source = null;

  const $ = (id) => document.getElementById(id);
  const show = (id, visible = true) => { $(id).hidden = !visible; };
  const setConnection = (text) => { $("connection").textContent = text; };
  const fail = (text) => { $("error").textContent = text; };

  async function loggedIn() {
    const response = await fetch("/auth/status", { credentials: "same-origin" });
    return response.ok;
  }

  function askLogin() {
    show("login");
    $("login-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = new FormData(event.target);
      const response = await fetch("/auth/login", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username: form.get("username"), password: form.get("password") }),
      });
      if (!response.ok) {
        $("login-error").textContent = (await response.json()).message || "Login failed";
        return;
      }
      show("login", false);
      follow();
    });
  }

  function follow() {
    show("job");
    $("job-id").textContent = jobId;
    source = new EventSource(`/jobs/stream?job_id=${encodeURIComponent(jobId)}`);
    source.addEventListener("open", () => setConnection("live"));
    source.addEventListener("snapshot", (event) => { tasks.clear(); take(JSON.parse(event.data)); });
    source.addEventListener("update", (event) => take(JSON.parse(event.data)));
    source.addEventListener("end", () => { source.close(); setConnection("ended"); ended(); });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        setConnection("closed");
        explain();
      } else {
        setConnection("reconnecting…");
      }
    });
  }

  async function explain() {
    // An EventSource does not show why it stopped: ask the status route, which says it.
    const response = await fetch(`/jobs?job_id=${encodeURIComponent(jobId)}`,
                                 { credentials: "same-origin" });
    if (!response.ok) fail((await response.json()).message || `HTTP ${response.status}`);
  }

  function take(message) {
    job = message;
    for (const task of message.job_tasks_status) tasks.set(task.task_id, task);
    if (message.event) {
      $("last-event").textContent =
        `last event: ${message.event.type} at ${message.event.occurred_at} (offset ${message.event.offset})`;
    }
    render();
  }

  const ratio = (done, wanted) => (wanted > 0 ? Math.min(done / wanted, 1) : 0);
  const percent = (value) => `${(100 * value).toFixed(1)} %`;

  function render() {
    $("job-state").textContent = job.job_state;
    document.body.dataset.jobState = job.job_state;
    $("job-end").textContent = job.end_time ? `(ended ${job.end_time})` : "";
    const overall = ratio(job.simulated_primaries, job.requested_primaries);
    $("overall-progress").value = overall;
    $("overall-text").textContent =
      `${percent(overall)} · ${job.simulated_primaries} of ${job.requested_primaries} primaries`;
    const body = $("tasks").tBodies[0];
    for (const id of [...tasks.keys()].sort((a, b) => a - b)) {
      const task = tasks.get(id);
      let row = document.getElementById(`task-${id}`);
      if (!row) {
        row = body.insertRow();
        row.id = `task-${id}`;
        row.innerHTML = "<td class='num'></td><td></td><td><progress max='1'></progress></td>" +
                        "<td class='num'></td><td class='num'></td>";
        row.cells[0].textContent = id;
      }
      const done = ratio(task.simulated_primaries, task.requested_primaries);
      row.cells[1].textContent = task.task_state;
      row.querySelector("progress").value = done;
      row.cells[3].textContent = `${task.simulated_primaries} / ${task.requested_primaries}`;
      const left = task.estimated_time;
      row.cells[4].textContent = left ? `${left.hours}h ${left.minutes}m ${left.seconds}s` : "";
    }
  }

  const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

  async function readModelShows(state) {
    // The stream comes straight from the log; /results reads the read model, which the
    // projector fills a moment later. Wait (bounded) until it shows the same state.
    for (let i = 0; i < 120; i += 1) {
      const response = await fetch(`/jobs?job_id=${encodeURIComponent(jobId)}`,
                                   { credentials: "same-origin" });
      if (response.ok && (await response.json()).job_state === state) return;
      await sleep(250);
    }
  }

  async function ended() {
    if (!job || !["COMPLETED", "FAILED"].includes(job.job_state)) return;
    await readModelShows(job.job_state);
    const response = await fetch(`/results?job_id=${encodeURIComponent(jobId)}`,
                                 { credentials: "same-origin" });
    show("results");
    if (!response.ok) {
      $("results-note").textContent = (await response.json()).message;
      document.body.dataset.results = "none";
      return;
    }
    const results = await response.json();
    if (job.job_state === "FAILED") $("results-note").textContent = "Partial results (some tasks failed).";
    let drawn = 0;
    results.estimators.forEach((estimator, e) => {
      (estimator.pages || []).forEach((page, p) => { if (plot(estimator, page, e, p)) drawn += 1; });
    });
    document.body.dataset.plots = String(drawn);
    document.body.dataset.results = "drawn";
  }

  const label = (axis) => (axis ? `${axis.name || ""}${axis.unit ? ` [${axis.unit}]` : ""}` : "");

  function plot(estimator, page, e, p) {
    const data = page.data || {};
    const values = data.values || [];
    const dims = Number(page.dimensions);
    const div = document.createElement("div");
    div.id = `plot-${e}-${p}`;
    div.className = "plot";
    $("plots").appendChild(div);
    const title = `${estimator.name} · ${(page.metadata && page.metadata.page_name) || data.name || `page ${p}`}`;
    const layout = { title: { text: title }, margin: { t: 48, r: 24, b: 56, l: 72 } };
    let trace;
    if (dims === 1) {
      const axis = page.axis_dim1;
      const x = axis && axis.values.length === values.length ? axis.values : values.map((_, i) => i);
      trace = { type: "scatter", mode: "lines+markers", x, y: values, name: data.name };
      if (Array.isArray(data.error)) trace.error_y = { type: "data", array: data.error, visible: true };
      layout.xaxis = { title: { text: label(axis) || "bin" } };
      layout.yaxis = { title: { text: label(data) } };
    } else if (dims === 2) {
      // Values are the flattened (dim1, dim2) array, dim2 varying fastest.
      const xs = page.axis_dim1.values;
      const ys = page.axis_dim2.values;
      const z = ys.map((_, j) => xs.map((__, i) => values[i * ys.length + j]));
      trace = { type: "heatmap", x: xs, y: ys, z, colorbar: { title: { text: label(data) } } };
      layout.xaxis = { title: { text: label(page.axis_dim1) } };
      layout.yaxis = { title: { text: label(page.axis_dim2) } };
    } else {
      div.className = "muted";
      div.textContent = `${title}: ${dims}-D page (${values.length} values) is not plotted here`;
      return false;
    }
    window.Plotly.newPlot(div, [trace], layout, { responsive: true, displaylogo: false });
    return true;
  }

  async function start() {
    if (!jobId) {
      fail("Open this page as /live?job_id=<job id>.");
      return;
    }
    if (typeof window.Plotly === "undefined") fail("The plotting library did not load.");
    if (await loggedIn()) follow(); else askLogin();
  }

  start();
})();
