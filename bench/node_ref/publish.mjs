// Durable publish throughput: TOTAL updates over HTTP, CONCURRENCY at a time, JOBS jobs
// (JOBS 1: every update to one job, the hot-row case).
//   node publish.mjs URL TOKEN TOTAL CONCURRENCY JOBS
// Each answer is awaited; only 200/201 count, anything else (an error status, a refused
// or cut connection) is refused. Prints one JSON line.
import { post } from "./post.mjs";

const [url, token, total, concurrency, jobs] = process.argv.slice(2);
const run = `durable-${Date.now()}`;
let next = 0;
let ok = 0;
const failures = {};
const latencies = [];

async function worker() {
  while (next < Number(total)) {
    const i = next++;
    const sent = performance.now();
    const status = await post(`${url}/api/jobs/${run}-${i % Number(jobs)}/updates`, token,
                              { progress: i % 100, message: `step ${i}` });
    latencies.push(performance.now() - sent);
    if (status === 200 || status === 201) ok += 1;
    else failures[status] = (failures[status] ?? 0) + 1;
  }
}

const started = performance.now();
await Promise.all(Array.from({ length: Number(concurrency) }, worker));
const seconds = (performance.now() - started) / 1000;
latencies.sort((a, b) => a - b);
const pick = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
console.log(JSON.stringify({
  ok, refused: Number(total) - ok, failures, seconds, updates_per_s: Math.round(ok / seconds),
  p50_ms: pick(0.5), p99_ms: pick(0.99),
}));
process.exit(ok === Number(total) ? 0 : 1);
