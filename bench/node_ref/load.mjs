// Load generator: N websocket subscribers of one job, K events published over HTTP.
//   node load.mjs URL N K TOKEN [RATE]
// RATE 0 (default): all K updates at once, as concurrent POSTs (fan-out throughput).
// RATE r: one update every 1/r s (latency below saturation).
// Prints one JSON line: deliveries/s and publish-to-delivery latency (one clock).
import { subscribers } from "./subscribers.mjs";

const [url, n, k, token, rate = "0"] = process.argv.slice(2);
const clients = Number(n);
const events = Number(k);
const job = `bench-${Date.now()}`;
const latencies = [];
let delivered = 0;
let lastAt = 0;

const { sockets, errors } = await subscribers(url, clients, () => job, (socket) => {
  socket.on("job:update", (event) => {
    const now = performance.timeOrigin + performance.now();
    latencies.push(now - event.data.t);
    delivered += 1;
    lastAt = now;
  });
});
if (errors.length) {
  console.error(`${errors.length} clients could not connect: ${errors[0]}`);
  process.exit(1);
}

function publish(i) {
  return fetch(`${url}/api/jobs/${job}/updates`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ progress: i % 100, data: { t: performance.timeOrigin + performance.now() } }),
  }).then((r) => r.text());
}

const started = Date.now();
const sent = [];
for (let i = 0; i < events; i++) {
  sent.push(publish(i));
  if (Number(rate) > 0) await new Promise((r) => setTimeout(r, 1000 / Number(rate)));
}
await Promise.all(sent);
const expected = clients * events;
const deadline = Date.now() + 120000;
while (delivered < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
latencies.sort((a, b) => a - b);
const pick = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? null;
const seconds = Math.max(0.001, (lastAt - started) / 1000);
console.log(JSON.stringify({
  clients, events, expected, delivered, seconds,
  deliveries_per_s: Math.round(delivered / seconds), p50_ms: pick(0.5), p99_ms: pick(0.99),
}));
sockets.forEach((s) => s.close());
process.exit(delivered === expected ? 0 : 1);
