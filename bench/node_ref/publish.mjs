// Durable publish throughput: TOTAL updates over HTTP, CONCURRENCY at a time, JOBS jobs.
//   node publish.mjs URL TOKEN TOTAL CONCURRENCY JOBS
// Each answer is awaited; only 200/201 count. Prints one JSON line.
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
    const res = await fetch(`${url}/api/jobs/${run}-${i % Number(jobs)}/updates`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ progress: i % 100, message: `step ${i}` }),
    });
    await res.text();
    latencies.push(performance.now() - sent);
    if (res.status === 200 || res.status === 201) ok += 1;
    else failures[res.status] = (failures[res.status] ?? 0) + 1;
  }
}

const started = performance.now();
await Promise.all(Array.from({ length: Number(concurrency) }, worker));
const seconds = (performance.now() - started) / 1000;
latencies.sort((a, b) => a - b);
const pick = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
console.log(JSON.stringify({
  ok, failures, seconds, updates_per_s: Math.round(ok / seconds),
  p50_ms: pick(0.5), p99_ms: pick(0.99),
}));
process.exit(ok === Number(total) ? 0 : 1);
