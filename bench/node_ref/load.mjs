// Load generator: N websocket subscribers, K events published over HTTP.
//   node load.mjs URLS N K TOKEN [RATE] [JOBS] [CONCURRENCY] [PUBLISH_URLS]
// URLS: one server, or several comma-separated: subscriber i connects to URLS[i % count].
// RATE 0 (default): all K updates at once, as concurrent POSTs (fan-out throughput).
// RATE r: one update every 1/r s (latency below saturation).
// JOBS j (default 1): subscriber i watches job (i / count of URLS) % j, so every server has
//   subscribers of every job; update u goes to job u % j.
// CONCURRENCY c > 0 with RATE 0: c POSTs in flight instead of all K at once (a
//   saturating load); with RATE r: c POSTs at once, r times a second (on schedule).
// PUBLISH_URLS (default URLS): comma-separated servers to POST through; update u to job
//   u % j goes through PUBLISH_URLS[(u / j) % count], so every job is posted through all.
// STEP=1 in the environment: print {"ready": true} once subscribed and wait for a line on
// stdin before publishing; after the result line, wait for stdin to close before
// disconnecting (the driver samples the servers' CPU around the publishing only).
// Prints one JSON line: deliveries/s, acknowledged updates/s, refused POSTs,
// publish-to-delivery latency (the event carries its publish time: one clock), and what
// went wrong if anything: deliveries missing, clients dropped, events out of seq order.
import { createInterface } from "node:readline";
import { post } from "./post.mjs";
import { subscribers } from "./subscribers.mjs";

const [urlList, n, k, token, rate = "0", j = "1", c = "0", publishList = urlList] =
  process.argv.slice(2);
const urls = urlList.split(",");
const publishUrls = publishList.split(",");
const clients = Number(n);
const events = Number(k);
const jobs = Number(j);
const concurrency = Number(c);
const run = `bench-${Date.now()}`;
const jobOf = (i) => `${run}-${Math.floor(i / urls.length) % jobs}`;
const watchers = new Map();
const latencies = [];
let delivered = 0;
let lastAt = 0;

const step = process.env.STEP === "1";
const lines = step ? createInterface({ input: process.stdin })[Symbol.asyncIterator]() : null;

const spread = (i) => urls[i % urls.length];
let dropped = 0;
let dropReason = null;
let outOfOrder = 0; // an event whose seq is not the one after the client's previous one
const { sockets, errors } = await subscribers(spread, clients, jobOf, (socket) => {
  let last = null;
  socket.on("job:update", (event) => {
    const now = performance.timeOrigin + performance.now();
    latencies.push(now - event.data.t);
    delivered += 1;
    lastAt = now;
    if (last !== null && event.seq !== last + 1) outOfOrder += 1;
    last = event.seq;
  });
  socket.on("disconnect", (reason) => {
    dropped += 1;
    dropReason ??= reason;
  });
});
if (errors.length) {
  console.error(`${errors.length} clients could not connect: ${errors[0]}`);
  process.exit(1);
}
for (let i = 0; i < clients; i++) watchers.set(jobOf(i), (watchers.get(jobOf(i)) ?? 0) + 1);
if (step) {
  console.log(JSON.stringify({ ready: true }));
  await lines.next();
}

let ok = 0;
let expected = 0;
let answeredAt = 0;
const refused = {};

async function publish(u) {
  const job = `${run}-${u % jobs}`;
  const via = publishUrls[Math.floor(u / jobs) % publishUrls.length];
  const status = await post(`${via}/api/jobs/${job}/updates`, token, {
    progress: u % 100, data: { t: performance.timeOrigin + performance.now() },
  });
  answeredAt = performance.timeOrigin + performance.now();
  if (status === 200 || status === 201) {
    ok += 1;
    expected += watchers.get(job) ?? 0;
  } else {
    refused[status] = (refused[status] ?? 0) + 1;
  }
}

const started = performance.timeOrigin + performance.now();
if (concurrency > 0 && Number(rate) === 0) {
  let next = 0;
  const worker = async () => {
    while (next < events) await publish(next++);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
} else if (concurrency > 0) {
  const sent = [];
  for (let u = 0, tick = 0; u < events; u += concurrency, tick++) {
    const due = started + (tick * 1000) / Number(rate);
    const now = performance.timeOrigin + performance.now();
    if (due > now) await new Promise((r) => setTimeout(r, due - now));
    for (let v = u; v < Math.min(events, u + concurrency); v++) sent.push(publish(v));
  }
  await Promise.all(sent);
} else {
  const sent = [];
  for (let u = 0; u < events; u++) {
    sent.push(publish(u));
    if (Number(rate) > 0) await new Promise((r) => setTimeout(r, 1000 / Number(rate)));
  }
  await Promise.all(sent);
}
// Until every delivery arrived, or none came for 15 s (a dropped client's never will).
const deadline = Date.now() + 120000;
let seen = -1;
let seenAt = Date.now();
while (delivered < expected && Date.now() < deadline && Date.now() - seenAt < 15000) {
  if (delivered !== seen) [seen, seenAt] = [delivered, Date.now()];
  await new Promise((r) => setTimeout(r, 5));
}
latencies.sort((a, b) => a - b);
const pick = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? null;
const seconds = Math.max(0.001, (lastAt - started) / 1000);
const publishSeconds = Math.max(0.001, (answeredAt - started) / 1000);
console.log(JSON.stringify({
  clients, events, expected, delivered, seconds,
  deliveries_per_s: Math.round(delivered / seconds), p50_ms: pick(0.5), p99_ms: pick(0.99),
  ok, updates_per_s: Math.round(ok / publishSeconds),
  refused: events - ok, refusals: refused,
  missing: expected - delivered, dropped, drop_reason: dropReason, out_of_order: outOfOrder,
}));
if (step) while (!(await lines.next()).done); // until the driver closes stdin
sockets.forEach((s) => s.close());
process.exit(delivered === expected && ok === events ? 0 : 1);
