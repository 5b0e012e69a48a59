// Live log lines, end to end: SUBSCRIBERS websocket clients of ONE job, subscribed with
// log_since 0, and TOTAL lines appended to it over HTTP, BATCH lines per POST, IN_FLIGHT
// POSTs at a time, each line LINE_BYTES long.
//   node logs.mjs URL TOKEN SUBSCRIBERS TOTAL BATCH IN_FLIGHT [LINE_BYTES]
// The clock starts at the first POST and stops when every subscriber has every line. Each
// subscriber checks its `job:log` lines: offsets 1, 2, 3… with none missing (a gap), none
// repeated or going back; every answer must be 201 with the POST's offsets (together, each
// of 1…TOTAL once), every subscribe ack `ok` with no line yet. The first line of each POST
// carries its send time, so publish-to-delivery latency is measured per batch on one clock.
// The publisher runs on a worker thread: with many subscribers, parsing every copy of every
// line keeps this thread busy, and POSTs sent from it would wait for that.
// Prints one JSON line; exits 1 if anything went wrong (the driver reports it).
// STEP=1 in the environment: as load.mjs (ready, wait for a line on stdin, publish, print,
// wait for stdin to close), so the driver samples CPU time around the publishing only.
import { once } from "node:events";
import { createInterface } from "node:readline";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { post, postForBody } from "./post.mjs";
import { subscribers } from "./subscribers.mjs";

const now = () => performance.timeOrigin + performance.now();

// The publisher (worker thread): IN_FLIGHT POSTs at a time until every line is sent.
async function publish({ url, token, job, lines, perPost, inFlight, lineBytes }) {
  // Bodies built ahead: lines of LINE_BYTES characters; a POST's first line starts with its
  // send time (so every text is LINE_BYTES long, give or take a few characters).
  const pad = (text) => text + "x".repeat(Math.max(0, lineBytes - text.length));
  const rest = (count) => JSON.stringify(Array.from({ length: count }, (_, k) => ({ text: pad(`line ${k}`) })));
  const tails = new Map();
  const body = (count, sent) => {
    if (!tails.has(count)) tails.set(count, count > 1 ? `,${rest(count - 1).slice(1, -1)}` : "");
    return `{"lines":[${JSON.stringify({ text: pad(`${sent.toFixed(3)} `) })}${tails.get(count)}]}`;
  };
  let next = 0;
  let answeredAt = 0;
  let posts = 0;
  let badAnswers = 0; // a 201 without the right offsets
  const refused = {};
  const seen = new Uint8Array(lines + 1);
  const worker = async () => {
    while (next < lines) {
      const count = Math.min(perPost, lines - next);
      next += count;
      const { status, body: answer } = await postForBody(`${url}/api/jobs/${job}/logs`, token,
                                                         body(count, now()));
      answeredAt = now();
      posts += 1;
      if (status !== 201) {
        refused[status] = (refused[status] ?? 0) + 1;
        continue;
      }
      const offsets = answer?.offsets ?? [];
      const run = offsets.length === count && offsets.every((o, k) => o === offsets[0] + k);
      if (!run || offsets[0] < 1 || offsets[count - 1] > lines) {
        badAnswers += 1;
        continue;
      }
      for (const o of offsets) {
        if (seen[o]) badAnswers += 1;
        seen[o] = 1;
      }
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return { answeredAt, posts, badAnswers, refused };
}

if (!isMainThread) {
  parentPort.postMessage({ ready: true });
  await once(parentPort, "message"); // go
  parentPort.postMessage(await publish(workerData));
} else {
  await main();
}

async function main() {
  const [url, token, n, total, batch, inFlight, lineBytes = "100"] = process.argv.slice(2);
  const clients = Number(n);
  const lines = Number(total);
  const job = `logs-${Date.now()}`;
  const step = process.env.STEP === "1";
  const stdin = step ? createInterface({ input: process.stdin })[Symbol.asyncIterator]() : null;

  const created = await post(`${url}/api/jobs/${job}/updates`, token, { progress: 0 });
  if (created !== 201) {
    console.error(`could not create ${job}: ${created}`);
    process.exit(1);
  }
  const publisher = new Worker(new URL(import.meta.url), {
    workerData: { url, token, job, lines, perPost: Number(batch), inFlight: Number(inFlight),
                  lineBytes: Number(lineBytes) },
  });
  const publisherError = once(publisher, "error").then(([err]) => {
    console.error(`publisher: ${err}`);
    process.exit(1);
  });
  await once(publisher, "message"); // ready

  let delivered = 0; // lines taken in order, over all subscribers
  let finished = 0; // subscribers that have every line
  let lastAt = 0;
  let gaps = 0; // a line whose offset is beyond the next one (lines skipped)
  let backwards = 0; // a line whose offset was seen already (repeated or out of order)
  let dropped = 0;
  let dropReason = null;
  const latencies = []; // ms from a POST's send to a subscriber's receipt of its batch

  const { sockets, errors, acks } = await subscribers(url, clients, () => job, (socket) => {
    let last = 0;
    let done = false;
    socket.on("job:log", (event) => {
      const at = now();
      lastAt = at;
      const sent = parseFloat(event.lines[0].text); // NaN unless the first line of a POST
      if (sent > 0) latencies.push(at - sent);
      for (const line of event.lines) {
        if (line.offset <= last) {
          backwards += 1;
          continue;
        }
        if (line.offset !== last + 1) gaps += 1;
        last = line.offset;
        delivered += 1;
      }
      if (last === lines && !done) {
        done = true;
        finished += 1;
      }
    });
    socket.on("disconnect", (reason) => {
      dropped += 1;
      dropReason ??= reason;
    });
  }, { log_since: 0 });
  const badAcks = acks.filter((a) => !a?.ok || a.log_offset !== 0 || a.logs.length !== 0).length;

  if (step) {
    console.log(JSON.stringify({ ready: true }));
    await stdin.next();
  }
  const cpu = process.cpuUsage();
  const started = now();
  publisher.postMessage("go");
  const [published] = await Promise.race([once(publisher, "message"), publisherError]);
  // Until every subscriber has every line, or none came for 15 s (a lost one never will).
  const deadline = Date.now() + 300000;
  let count = -1;
  let countAt = Date.now();
  while (finished < clients && Date.now() < deadline && Date.now() - countAt < 15000) {
    if (delivered !== count) [count, countAt] = [delivered, Date.now()];
    await new Promise((r) => setTimeout(r, 2));
  }
  const ended = finished === clients ? lastAt : now();
  const used = process.cpuUsage(cpu);
  latencies.sort((a, b) => a - b);
  const pick = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? null;
  const seconds = Math.max(0.001, (ended - started) / 1000);
  const publishSeconds = Math.max(0.001, (published.answeredAt - started) / 1000);
  const refused = Object.values(published.refused).reduce((a, b) => a + b, 0);
  const result = {
    subscribers: clients, lines, batch: Number(batch), in_flight: Number(inFlight), seconds,
    lines_per_s: Math.round(lines / seconds), appended_per_s: Math.round(lines / publishSeconds),
    posts_per_s: Math.round(published.posts / publishSeconds),
    line_deliveries_per_s: Math.round(delivered / seconds), p50_ms: pick(0.5),
    p99_ms: pick(0.99), client_cpu_s: (used.user + used.system) / 1e6,
    missing: lines * clients - delivered, gaps, backwards, refused, refusals: published.refused,
    bad_answers: published.badAnswers, bad_acks: badAcks, connect_errors: errors.length, dropped,
    drop_reason: dropReason,
  };
  console.log(JSON.stringify(result));
  const faults = result.missing + gaps + backwards + refused + published.badAnswers + badAcks +
    errors.length + dropped;
  if (step) while (!(await stdin.next()).done); // until the driver closes stdin
  sockets.forEach((s) => s.close()); // (each close counts as a drop from here on)
  process.exit(faults === 0 ? 0 : 1);
}
