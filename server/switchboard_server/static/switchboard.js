// Switchboard in the browser: one shared socket per namespace for the whole app.
//
//   import { configure, watchJob, joinRoom, onAnnouncement } from "http://127.0.0.1:8001/switchboard.js";
//   configure({ token });                       // optional; before the first call
//   const stop = watchJob("build-42", (job) => render(job));
//   const stopLines = watchLogs("build-42", (lines) => lines.forEach(show));
//
// Built on the official socket.io-client, served by the same Switchboard server.
import { io } from "./vendor/socket.io.esm.min.js";

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const ACK_TIMEOUT = 10000;

const options = { url: new URL(import.meta.url).origin, auth: {}, transports: undefined };
const sockets = new Map();
const watchers = new Map(); // job id -> number of live watchJob() and watchLogs() calls
let renewal = null; // { expiresAt, token: Promise<string> }: one refreshToken() per expiry

/**
 * Set the server URL, client token, display name or transports, and `refreshToken`: called
 * (once for every namespace) when the server says the token expires soon; it returns the
 * new token (or a promise of it). Call before anything else.
 */
export function configure({ url, token, name, transports, refreshToken } = {}) {
  if (sockets.size) throw new Error("switchboard: configure() must come before the first socket");
  if (url) options.url = url.replace(/\/+$/, "");
  if (token) options.auth.token = token;
  if (name) options.auth.name = name;
  if (transports) options.transports = transports;
  if (refreshToken) options.refreshToken = refreshToken;
}

/** The app-wide socket of a namespace ("/job" or "/info"), opened on first use. */
export function socket(namespace) {
  let found = sockets.get(namespace);
  if (!found) {
    found = io(options.url + namespace, { auth: options.auth, transports: options.transports });
    sockets.set(namespace, found);
    found.on("token:expiring", (notice) => {
      if (!options.refreshToken) return;
      renew(namespace, notice).catch((err) => console.warn("switchboard: token refresh failed", err));
    });
  }
  return found;
}

async function renew(namespace, notice) {
  if (!renewal || renewal.expiresAt !== notice.expires_at) {
    renewal = { expiresAt: notice.expires_at, token: Promise.resolve().then(options.refreshToken) };
  }
  const token = await renewal.token;
  options.auth.token = token; // a reconnect brings the new one too
  await call(namespace, "refresh", { token });
}

async function call(namespace, event, payload) {
  const ack = await socket(namespace).timeout(ACK_TIMEOUT).emitWithAck(event, payload);
  if (!ack.ok) throw Object.assign(new Error(ack.error.message), { code: ack.error.code });
  return ack;
}

/**
 * Call onEvent(job) for every event of a job, in seq order, exactly once, from its current
 * state on (or from `since`: 0 replays the kept history). Resumes by seq after a reconnect.
 * Returns a function that stops watching.
 */
export function watchJob(jobId, onEvent, { since = null, onError } = {}) {
  let last = since;
  const take = (event) => {
    if (last !== null && event.seq <= last) return true; // seen already
    if (last !== null && event.seq > last + 1) return false; // a gap
    last = event.seq;
    onEvent(event);
    return true;
  };
  return follow(jobId, "job:update", {
    owns: (event) => event.id === jobId,
    numberOf: (event) => event.seq,
    take,
    onError,
    resubscribe: async (accept) => {
      const ack = await call("/job", "subscribe", { job_id: jobId, since: last });
      if (ack.reset) last = null;
      ack.missed.forEach(accept);
      if (ack.job && (last === null || ack.job.seq > last)) {
        last = ack.job.seq;
        onEvent(ack.job);
      }
      return false;
    },
  });
}

/**
 * Call onLines(lines) with a job's log lines, in offset order, each exactly once, from the
 * first kept line (`since`: after that offset; null: from now on). Resumes by offset after
 * a reconnect. Returns a function that stops watching.
 */
export function watchLogs(jobId, onLines, { since = 0, onError } = {}) {
  let last = since; // the last offset taken; null: take what comes (from now on, after a reset)
  const take = (batch) => {
    const lines = last === null ? batch.lines : batch.lines.filter((line) => line.offset > last);
    if (!lines.length) return true; // seen already
    if (last !== null && lines[0].offset > last + 1) return false; // a gap
    last = lines.at(-1).offset;
    onLines(lines);
    return true;
  };
  return follow(jobId, "job:log", {
    owns: (batch) => batch.job_id === jobId,
    numberOf: (batch) => batch.lines[0].offset,
    take,
    onError,
    resubscribe: async (accept) => {
      const ack = await call("/job", "subscribe", { job_id: jobId, log_since: last });
      if (ack.logs_reset) last = null;
      accept({ job_id: jobId, lines: ack.logs });
      last ??= ack.log_offset;
      return ack.logs.length > 0 && last < ack.log_offset; // more pages are kept
    },
  });
}

// What watchJob and watchLogs share: pushes of one kind for one job go through `take` in
// order, once each. At a gap `take` answers false: that push waits, with those that come
// meanwhile, while `resubscribe` (also run at every connect) takes what its ack carries
// through `accept`; it resolves to true when more is kept. Returns stop().
function follow(jobId, event, { owns, numberOf, take, resubscribe, onError }) {
  const jobs = socket("/job");
  let syncing = false;
  let early = []; // pushes that arrived while a subscribe was in flight, or after a gap
  let stopped = false;

  const accept = (body) => {
    if (!take(body)) {
      early.push(body); // a gap: fetch what is missing, then replay this
      sync();
    }
  };
  const onPush = (body) => {
    if (stopped || !owns(body)) return;
    if (syncing) early.push(body);
    else accept(body);
  };
  const sync = async () => {
    if (syncing || stopped) return;
    syncing = true;
    let more = false;
    try {
      more = await resubscribe(accept);
    } catch (error) {
      if (error.code) onError?.(error); // refused; a timeout waits for the next connect
    } finally {
      syncing = false;
      const pending = early.sort((a, b) => numberOf(a) - numberOf(b));
      early = [];
      pending.forEach(accept);
    }
    if (more) sync();
  };

  watchers.set(jobId, (watchers.get(jobId) ?? 0) + 1);
  jobs.on(event, onPush);
  jobs.on("connect", sync);
  if (jobs.connected) sync();
  return () => {
    if (stopped) return;
    stopped = true;
    jobs.off(event, onPush);
    jobs.off("connect", sync);
    const left = watchers.get(jobId) - 1;
    if (left > 0) watchers.set(jobId, left);
    else {
      watchers.delete(jobId);
      if (jobs.connected) jobs.emit("unsubscribe", { job_id: jobId });
    }
  };
}

/**
 * Ask a job's worker to stop. Resolves to the job, now with `cancel_requested`; the
 * worker's final update says `cancelled`. Needs a token whose `cancel` grant covers it.
 */
export async function cancelJob(jobId) {
  return (await call("/job", "cancel", { job_id: jobId })).job;
}

/** Who this app's connection is and what it may do: { sub, name, jobs, rooms, cancel }. */
export async function whoami() {
  const { ok, ...me } = await call("/job", "whoami", {});
  return me;
}

/** Whether a grant list (globs with * and ?) covers a job id or room. */
export function granted(patterns, name) {
  return patterns.some((pattern) => {
    const escaped = pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    return new RegExp(`^${escaped.replaceAll("*", ".*").replaceAll("?", ".")}$`).test(name);
  });
}

/**
 * Every job's latest state: the recent jobs at each (re)connect, then every event.
 * Calls onJob(job) only with states newer than the last one seen for that job.
 */
export function watchAllJobs(onJob, { onError } = {}) {
  return followMany({ job_id: "*" }, () => true, onJob, onError);
}

/**
 * Every job with a tag (e.g. "user:42"): the newest of them at each (re)connect, then every
 * newer state of each, in seq order, as long as it has the tag. When an update takes the tag
 * away, onLeave(job) gets that state (without the tag) once. Returns a function that stops.
 */
export function watchTag(tag, onJob, { onError, onLeave } = {}) {
  return followMany({ tag }, (job) => (job.tags ?? []).includes(tag), onJob, onError, onLeave);
}

// A subscription to many jobs ('*' or a tag): each job's states once, newest last; a job
// taken on whose newer state is not `wanted` is dropped, with onLeave(that state).
function followMany(target, wanted, onJob, onError, onLeave) {
  const jobs = socket("/job");
  const seen = new Map(); // id -> [created_at, seq]
  const offer = (job) => {
    const [created, seq] = seen.get(job.id) ?? [null, 0];
    if (created === job.created_at && job.seq <= seq) return;
    if (!wanted(job)) {
      if (seen.delete(job.id)) onLeave?.(job);
      return;
    }
    seen.set(job.id, [job.created_at, job.seq]);
    onJob(job);
  };
  const sync = () =>
    call("/job", "subscribe", target).then(
      (ack) => [...ack.jobs].reverse().forEach(offer),
      (error) => error.code && onError?.(error),
    );
  jobs.on("job:update", offer);
  jobs.on("connect", sync);
  if (jobs.connected) sync();
  return () => {
    jobs.off("job:update", offer);
    jobs.off("connect", sync);
    if (jobs.connected) jobs.emit("unsubscribe", target);
  };
}

/**
 * A parent job's children summary ({ total, by_status, progress, updated_at }) now and as
 * its children change; needs a subscription to the parent (watchJob). Returns a stop function.
 */
export function watchChildren(parentId, onSummary) {
  const jobs = socket("/job");
  let latest = "";
  const offer = (summary) => {
    if (summary.job_id !== parentId || summary.updated_at < latest) return;
    latest = summary.updated_at;
    onSummary(summary);
  };
  jobs.on("job:children", offer);
  return () => jobs.off("job:children", offer);
}

/**
 * Join a chat room. Resolves to { history, members, send(text), leave() }; rejoins after
 * a reconnect. onMessage gets others' messages, onPresence joins and leaves.
 */
export async function joinRoom(room, { onMessage, onPresence } = {}) {
  const info = socket("/info");
  const ack = await call("/info", "join", { room });
  const message = (m) => m.room === room && onMessage?.(m);
  const presence = (p) => p.room === room && onPresence?.(p);
  const rejoin = () => info.emit("join", { room });
  info.on("message", message);
  info.on("presence", presence);
  info.on("connect", rejoin);
  return {
    history: ack.history,
    members: ack.members,
    send: async (text) => (await call("/info", "message", { room, text })).message,
    leave: async () => {
      info.off("message", message);
      info.off("presence", presence);
      info.off("connect", rejoin);
      await call("/info", "leave", { room });
    },
  };
}

/** Call onEvent(announcement) for each announcement; returns a function that stops. */
export function onAnnouncement(onEvent) {
  const info = socket("/info");
  info.on("announcement", onEvent);
  return () => info.off("announcement", onEvent);
}

/** The last `limit` announcements, newest first. */
export async function recentAnnouncements(limit = 20) {
  return (await call("/info", "recent", { limit })).announcements;
}

/**
 * Call onChange({ connected, transport, error }) now and whenever a namespace's connection
 * changes: connect, disconnect, refusal, and the upgrade from polling to websocket.
 * Returns a function that stops.
 */
export function onConnection(onChange, namespace = "/job") {
  const s = socket(namespace);
  const report = (error) =>
    onChange({
      connected: s.connected,
      transport: s.connected ? s.io.engine.transport.name : null,
      error: error?.message ?? null,
    });
  const changed = () => report();
  const watchEngine = () => s.io.engine.off("upgrade", changed).on("upgrade", changed);
  s.on("connect", changed);
  s.on("disconnect", changed);
  s.on("connect_error", report);
  s.io.on("open", watchEngine);
  if (s.io.engine) watchEngine();
  report();
  return () => {
    s.off("connect", changed);
    s.off("disconnect", changed);
    s.off("connect_error", report);
    s.io.off("open", watchEngine);
    s.io.engine?.off("upgrade", changed);
  };
}
