// Conveyor's UI: follow a run over the API's event stream, refresh the parts of the
// page that changed, call the API's actions. No framework, nothing loaded from elsewhere.
"use strict";

const HEADERS = { "X-Conveyor-UI": "1" };

async function fetchText(url) {
  const answer = await fetch(url, { headers: HEADERS, credentials: "same-origin" });
  if (!answer.ok) throw new Error(`${answer.status} ${url}`);
  return answer.text();
}

function throttled(fn, wait) {
  let timer = null;
  let again = false;
  return () => {
    if (timer) { again = true; return; }
    fn();
    timer = setTimeout(() => { timer = null; if (again) { again = false; fn(); } }, wait);
  };
}

async function refresh(element) {
  try {
    element.innerHTML = await fetchText(element.dataset.refresh);
  } catch (error) {
    if (error instanceof TypeError) return;  // the server is away: kept as it was
    throw error;
  }
  wire(element);
}

function wireActions(root) {
  for (const button of root.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", async () => {
      if (button.dataset.confirm && !confirm(button.dataset.confirm)) return;
      button.disabled = true;
      const answer = await fetch(button.dataset.action, {
        method: button.dataset.method || "POST", headers: HEADERS, credentials: "same-origin",
      });
      if (!answer.ok) {
        const problem = await answer.json().catch(() => ({}));
        alert(`${problem.title || answer.status}: ${problem.detail || ""}`);
      } else if (button.dataset.then) {
        window.location.assign(button.dataset.then);  // the page's run is gone
        return;
      }
      button.disabled = false;
      const live = document.getElementById("live");
      if (live) refresh(live);
    });
  }
}

let logStream = null;

function followLogs(url, index) {
  const pre = document.getElementById("logs");
  if (!pre) return;
  if (logStream) logStream.close();
  pre.textContent = "";
  const full = index === undefined ? url : `${url}&index=${index}`;
  logStream = new EventSource(full, { withCredentials: true });
  logStream.onmessage = (message) => {
    const line = JSON.parse(message.data);
    // Only a fan-out's stream is opened for an item; a single task's lines have no index.
    const item = index === undefined ? "" : `[${line.index}]`;
    const where = `${line.task}${item}#${line.attempt} ${line.stream}| `;
    pre.append(document.createTextNode(where + line.text + "\n"));
    pre.scrollTop = pre.scrollHeight;
  };
  logStream.addEventListener("end", () => logStream.close());
}

async function openTask(run, task, query = "") {
  const panel = document.getElementById("task-panel");
  if (!panel) return;
  panel.dataset.task = task;
  panel.innerHTML = await fetchText(`/runs/${run}/tasks/${encodeURIComponent(task)}${query}`);
  wire(panel);
  const pre = document.getElementById("logs");
  if (pre && pre.dataset.stream) followLogs(pre.dataset.stream);
}

function wireStarts(root) {
  for (const form of root.querySelectorAll("form[data-start]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = form.querySelector(".error");
      error.textContent = "";
      let params;
      try {
        params = JSON.parse(form.elements.params.value || "{}");
      } catch (problem) {
        error.textContent = `parameters: ${problem.message}`;
        return;
      }
      const answer = await fetch("/api/v1/runs", {
        method: "POST",
        credentials: "same-origin",
        headers: { ...HEADERS, "Content-Type": "application/json" },
        body: JSON.stringify({ workflow: form.dataset.start, params }),
      });
      const body = await answer.json().catch(() => ({}));
      if (!answer.ok) {
        error.textContent = `${body.title || answer.status}: ${body.detail || ""}`;
        return;
      }
      window.location = `/runs/${body.run_id}`;
    });
  }
}

function wire(root) {
  wireActions(root);
  wireStarts(root);
  const run = document.getElementById("run");
  if (!run) return;
  for (const node of root.querySelectorAll("[data-task]")) {
    if (node.id === "task-panel") continue;
    node.addEventListener("click", () => openTask(run.dataset.run, node.dataset.task));
  }
  for (const link of root.querySelectorAll("a[data-items]")) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      const panel = document.getElementById("task-panel");
      openTask(run.dataset.run, panel.dataset.task, link.dataset.items);
    });
  }
  // A fan-out of 100,000 items is 2,000 pages: an item is reached by its number.
  for (const form of root.querySelectorAll("form[data-jump]")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const panel = document.getElementById("task-panel");
      const item = encodeURIComponent(form.elements.namedItem("item").value);
      openTask(run.dataset.run, panel.dataset.task, form.dataset.jump + item);
    });
  }
  for (const link of root.querySelectorAll("a[data-logs]")) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      followLogs(link.dataset.logs, link.dataset.index);
    });
  }
}

function followRun(run, shown) {
  const live = document.getElementById("live");
  let lost = false;  // the stream is down: the server is away, the page waits for it
  const again = throttled(() => { if (!lost) refresh(live); }, 300);
  // From the events the page already shows on, as a note of what changed: the page
  // redraws from the server, so the events themselves (tens of thousands a second in
  // a big fan-out) need not come.
  const url = `/api/v1/runs/${run}/events/stream?after=${shown}&changes=true`;
  const stream = new EventSource(url, { withCredentials: true });
  stream.addEventListener("changes", again);
  stream.addEventListener("run_completed", () => { stream.close(); setTimeout(() => refresh(live), 200); });
  // A server that stops ends the stream; the browser reconnects by itself (to another
  // replica, or to this server once it is back) and the stream resumes after the last
  // event it had. Meanwhile the page says so, and catches up once connected again.
  const banner = document.getElementById("connection");
  stream.onerror = () => {
    lost = true;
    if (!banner) return;
    banner.hidden = false;
    if (stream.readyState === EventSource.CLOSED) {  // refused (a revoked token): no retry
      banner.textContent = "The server closed this page's connection: reload to follow the run again.";
    }
  };
  stream.onopen = () => {
    if (!lost) return;
    lost = false;
    if (banner) banner.hidden = true;
    refresh(live);
  };
}

document.addEventListener("DOMContentLoaded", () => {
  wire(document);
  const run = document.getElementById("run");
  const state = document.getElementById("run-state");
  if (run && state && state.textContent.trim() === "running") {
    followRun(run.dataset.run, run.dataset.events || "0");
  }
  const runs = document.getElementById("runs");
  if (runs) setInterval(() => refresh(runs), 2000);
});
