// Idle clients: N websocket subscribers that connect, then just stay for HOLD seconds.
//   node idle.mjs URL N HOLD
// Prints {"connected": N} once all are up (the driver then samples the server's memory),
// then one JSON line with how many were still connected at the end and any errors.
import { subscribers } from "./subscribers.mjs";

const [url, n, hold] = process.argv.slice(2);
const clients = Number(n);
let dropped = 0;

const { sockets, errors } = await subscribers(url, clients, (i) => `idle-${i % 100}`, (socket) => {
  socket.on("disconnect", () => { dropped += 1; });
});
console.log(JSON.stringify({ connected: sockets.filter((s) => s.connected).length }));
await new Promise((r) => setTimeout(r, Number(hold) * 1000));
const still = sockets.filter((s) => s.connected).length;
console.log(JSON.stringify({ clients, still_connected: still, dropped, errors: errors.length,
                             first_error: errors[0] ?? null }));
sockets.forEach((s) => s.close());
process.exit(still === clients ? 0 : 1);
