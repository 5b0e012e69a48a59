// Width of a cluster: what each node pays for pub/sub traffic its clients do not watch.
//   node width.mjs URLS PER_NODE JOBS_PER_NODE TOKEN
// URLS: the nodes, comma-separated. PER_NODE websocket subscribers connect to each node;
// node n's subscriber k watches job w-(n * JOBS_PER_NODE + k % JOBS_PER_NODE), a job that
// only that node's subscribers watch. Prints {"ready": true} once every subscriber is in,
// then reads one phase per line on stdin, JSON:
//   {"watched": true|false, "rate": R, "seconds": S, "via": [node indexes]}
// and publishes R updates a second for S seconds (on schedule, whatever the answers),
// update u to job (u % jobs) of all the nodes' jobs: the watched ones (w-…), or as many
// jobs that nobody watches (u-…); POSTed through via[(u / jobs) % via.length], so every
// job goes through each of those nodes in turn. Then waits for every delivery (or none
// for 15 s) and prints one JSON line: updates ok and refused, deliveries expected and
// delivered, publish-to-delivery p50/p99 (the event carries its publish time: one clock),
// and what went wrong: deliveries missing, clients dropped, events out of seq order, and
// events for a job the client does not watch (foreign). Exits when stdin closes.
import { createInterface } from "node:readline";
import { post } from "./post.mjs";
import { subscribers } from "./subscribers.mjs";

const [urlList, perNode, jobsPerNode, token] = process.argv.slice(2);
const urls = urlList.split(",");
const each = Number(perNode);
const perJob = Number(jobsPerNode);
const jobs = urls.length * perJob;
const run = `width-${Date.now()}`;
const now = () => performance.timeOrigin + performance.now();
const nodeOf = (i) => Math.floor(i / each);
const jobOf = (i) => `${run}-w-${nodeOf(i) * perJob + ((i % each) % perJob)}`;
const watchers = new Map();
for (let i = 0; i < urls.length * each; i++) watchers.set(jobOf(i), (watchers.get(jobOf(i)) ?? 0) + 1);

let delivered = 0;
let latencies = [];
let dropped = 0;
let dropReason = null;
let outOfOrder = 0; // an event whose seq is not the one after the client's previous one
let foreign = 0; // an event for a job this client did not subscribe to
const { sockets, errors } = await subscribers((i) => urls[nodeOf(i)], urls.length * each, jobOf,
  (socket) => {
    let last = null;
    socket.on("job:update", (event) => {
      latencies.push(now() - event.data.t);
      delivered += 1;
      if (event.id !== socket.job) foreign += 1;
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
sockets.forEach((socket, i) => { socket.job = jobOf(i); });

async function phase({ watched, rate, seconds, via }) {
  const events = Math.round(rate * seconds);
  const through = via.map((n) => urls[n]);
  const prefix = watched ? `${run}-w-` : `${run}-u-`;
  let ok = 0;
  let expected = 0;
  const refused = {};
  delivered = 0;
  latencies = [];
  const faultsBefore = { dropped, outOfOrder, foreign };
  const publish = async (u) => {
    const job = `${prefix}${u % jobs}`;
    const status = await post(`${through[Math.floor(u / jobs) % through.length]}/api/jobs/${job}/updates`,
                              token, { progress: u % 100, data: { t: now() } });
    if (status === 200 || status === 201) {
      ok += 1;
      expected += watchers.get(job) ?? 0;
    } else {
      refused[status] = (refused[status] ?? 0) + 1;
    }
  };
  const started = now();
  const sent = [];
  for (let u = 0; u < events;) {
    const due = started + (u * 1000) / rate;
    if (due > now()) await new Promise((r) => setTimeout(r, due - now()));
    for (; u < events && started + (u * 1000) / rate <= now(); u++) sent.push(publish(u));
  }
  await Promise.all(sent);
  const publishSeconds = (now() - started) / 1000;
  let seen = -1;
  let seenAt = Date.now();
  while (delivered < expected && Date.now() - seenAt < 15000) {
    if (delivered !== seen) [seen, seenAt] = [delivered, Date.now()];
    await new Promise((r) => setTimeout(r, 5));
  }
  latencies.sort((a, b) => a - b);
  const pick = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? null;
  return {
    events, ok, refused: events - ok, refusals: refused, updates_per_s: ok / publishSeconds,
    expected, delivered, missing: expected - delivered, p50_ms: pick(0.5), p99_ms: pick(0.99),
    dropped: dropped - faultsBefore.dropped, drop_reason: dropReason,
    out_of_order: outOfOrder - faultsBefore.outOfOrder, foreign: foreign - faultsBefore.foreign,
  };
}

console.log(JSON.stringify({ ready: true, clients: sockets.length, jobs }));
for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim()) console.log(JSON.stringify(await phase(JSON.parse(line))));
}
sockets.forEach((s) => s.close());
process.exit(0);
