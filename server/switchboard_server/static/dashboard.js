// The live dashboard: every job updating in place, a job's events and log lines on
// click, announcements, and the connection with its transport. Text is only ever set
// through textContent, so job messages, log lines and announcements cannot inject markup.
import {
  cancelJob, configure, granted, onAnnouncement, onConnection, recentAnnouncements, watchAllJobs,
  watchJob, watchLogs, watchTag, whoami,
} from "/switchboard.js";

const params = new URLSearchParams(location.search);
configure({
  token: params.get("token") ?? undefined,
  transports: params.get("transport") ? [params.get("transport")] : undefined,
});

const $ = (id) => document.getElementById(id);
const jobs = new Map(); // id -> { job, element }
const MAX_LINES = 2000; // log lines kept on the page
let stopLog = null;
let following = true; // keep the newest log line in view, until the reader scrolls up

document.querySelectorAll(".origin").forEach((el) => { el.textContent = location.origin; });

function age(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

function render(entry) {
  const { job, element } = entry;
  element.dataset.status = job.status;
  element.dataset.seq = job.seq;
  element.querySelector(".job-id").textContent = job.id;
  element.querySelector(".status").textContent = job.status;
  element.querySelector(".message").textContent = job.message ?? "";
  const bar = element.querySelector(".bar");
  const progress = job.progress ?? (job.status === "succeeded" ? 100 : null);
  bar.classList.toggle("indeterminate", progress === null && job.status === "running");
  bar.querySelector(".fill").style.width = `${progress ?? 0}%`;
  bar.setAttribute("aria-valuenow", progress ?? "");
  element.querySelector(".percent").textContent = progress === null ? "–" : `${Math.round(progress)}%`;
  const time = element.querySelector(".age");
  time.dateTime = job.updated_at;
  time.textContent = age(job.updated_at);
  element.querySelector(".tags").replaceChildren(...(job.tags ?? []).map((tag) => {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "tag";
    chip.textContent = tag;
    chip.addEventListener("click", (event) => {
      event.stopPropagation();
      filterBy(tag);
    });
    return chip;
  }));
  const cancel = element.querySelector(".cancel");
  const finished = ["succeeded", "failed", "cancelled"].includes(job.status);
  cancel.hidden = finished || !granted(cancelGrants, job.id);
  cancel.disabled = Boolean(job.cancel_requested);
  cancel.textContent = job.cancel_requested ? "Cancelling…" : "Cancel";
}

let cancelGrants = []; // job globs this connection may cancel (see whoami)

function upsert(job) {
  let entry = jobs.get(job.id);
  if (!entry) {
    const element = $("job-template").content.firstElementChild.cloneNode(true);
    element.addEventListener("click", (event) => {
      event.stopPropagation(); // a child's row sits inside its parent's
      showLog(job.id);
    });
    element.querySelector(".cancel").addEventListener("click", (event) => {
      event.stopPropagation();
      cancelJob(job.id).then(upsert, (error) => {
        element.querySelector(".message").textContent = `cancel refused: ${error.message}`;
      });
    });
    element.addEventListener("keydown", (e) => {
      if (e.key !== "Enter") return;
      e.stopPropagation();
      showLog(job.id);
    });
    entry = { job, element };
    jobs.set(job.id, entry);
  }
  entry.job = job;
  render(entry);
  relist();
}

// A job that left the tag shown (an update took the tag away).
function drop(job) {
  const entry = jobs.get(job.id);
  if (!entry) return;
  jobs.delete(job.id);
  entry.element.remove();
  relist();
}

function relist() {
  arrange();
  $("no-jobs").hidden = jobs.size > 0;
  $("job-count").textContent = `(${jobs.size})`;
}

// Most recently updated first; a batch's children inside its row, under a summary.
function arrange() {
  const sorted = [...jobs.values()].sort((a, b) => b.job.updated_at.localeCompare(a.job.updated_at));
  const lists = new Map([[null, $("jobs")]]);
  for (const { job, element } of sorted) lists.set(job.id, element.querySelector(".children"));
  const placed = new Map();
  for (const entry of sorted) {
    const parent = jobs.has(entry.job.parent) ? entry.job.parent : null;
    const list = lists.get(parent);
    const index = placed.get(parent) ?? 0;
    if (list.children[index] !== entry.element) list.insertBefore(entry.element, list.children[index] ?? null);
    placed.set(parent, index + 1);
  }
  for (const { job, element } of sorted) {
    const children = sorted.filter((other) => other.job.parent === job.id).map((other) => other.job);
    const counts = {};
    children.forEach((child) => { counts[child.status] = (counts[child.status] ?? 0) + 1; });
    const parts = Object.entries(counts).map(([status, count]) => `${count} ${status}`);
    const summary = element.querySelector(".children-summary");
    summary.hidden = children.length === 0;
    summary.textContent = `${children.length} ${children.length === 1 ? "child" : "children"} · ${parts.join(" · ")}`;
  }
}

// The jobs shown: every job, or those with one tag (?tag=…, or a click on a tag).
let stopJobs = null;
function filterBy(tag) {
  stopJobs?.();
  jobs.forEach(({ element }) => element.remove());
  jobs.clear();
  $("tag-filter").value = tag ?? "";
  $("clear-filter").hidden = !tag;
  const url = new URL(location.href);
  if (tag) url.searchParams.set("tag", tag);
  else url.searchParams.delete("tag");
  history.replaceState(null, "", url);
  const refused = (error) => { $("job-count").textContent = `(${error.message})`; };
  stopJobs = tag
    ? watchTag(tag, upsert, { onError: refused, onLeave: drop })
    : watchAllJobs(upsert, { onError: refused });
}

$("tag-form").addEventListener("submit", (event) => {
  event.preventDefault();
  filterBy($("tag-filter").value.trim() || null);
});
$("clear-filter").addEventListener("click", () => filterBy(null));

function showLog(jobId) {
  stopLog?.();
  for (const { element } of jobs.values()) element.setAttribute("aria-selected", element.querySelector(".job-id").textContent === jobId);
  $("log-panel").hidden = false;
  $("log-job").textContent = jobId;
  const log = $("log");
  log.replaceChildren();
  const stopEvents = watchJob(jobId, (event) => {
    const item = document.createElement("li");
    const seq = document.createElement("span");
    seq.className = "seq";
    seq.textContent = `#${event.seq}`;
    const progress = event.progress === null ? "" : ` ${Math.round(event.progress)}%`;
    item.append(seq, `${event.status}${progress}${event.message ? ` — ${event.message}` : ""}`);
    item.dataset.seq = event.seq;
    log.prepend(item);
  }, { since: 0 });
  $("lines").replaceChildren();
  following = true;
  $("lines-paused").hidden = true;
  const stopLines = watchLogs(jobId, showLines, { since: 0 });
  stopLog = () => {
    stopEvents();
    stopLines();
  };
}

function showLines(lines) {
  const box = $("lines");
  const rows = lines.slice(-MAX_LINES).map((line) => {
    const row = document.createElement("div");
    row.className = "line";
    row.dataset.offset = line.offset;
    row.dataset.stream = line.stream;
    row.textContent = line.text;
    return row;
  });
  box.append(...rows);
  for (let extra = box.childElementCount - MAX_LINES; extra > 0; extra--) box.firstElementChild.remove();
  if (following) box.scrollTop = box.scrollHeight;
}

$("lines").addEventListener("scroll", () => {
  const box = $("lines");
  following = box.scrollTop + box.clientHeight >= box.scrollHeight - 4; // at the bottom
  $("lines-paused").hidden = following;
});

function announce(announcement, { prepend = true } = {}) {
  const item = document.createElement("li");
  item.dataset.level = announcement.level;
  const level = document.createElement("span");
  level.className = "level";
  level.textContent = announcement.level;
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = `${announcement.room ? `#${announcement.room} · ` : ""}${new Date(announcement.ts).toLocaleString()}`;
  item.append(level, announcement.text, when);
  const list = $("announcements");
  if (prepend) list.prepend(item);
  else list.append(item);
  $("no-announcements").hidden = true;
}

onConnection(({ connected, transport, error }) => {
  const pill = $("connection");
  pill.dataset.state = connected ? "connected" : "disconnected";
  pill.dataset.transport = transport ?? "";
  pill.textContent = connected ? `connected · ${transport}` : error ? `disconnected · ${error}` : "disconnected · reconnecting…";
  if (connected) {
    whoami().then((me) => {
      cancelGrants = me.cancel;
      jobs.forEach(render);
    }, () => {});
  }
});
filterBy(params.get("tag"));
onAnnouncement((a) => announce(a));
recentAnnouncements(20).then((found) => found.forEach((a) => announce(a, { prepend: false })), () => {});
setInterval(() => jobs.forEach(({ job, element }) => {
  element.querySelector(".age").textContent = age(job.updated_at);
}), 1000);
