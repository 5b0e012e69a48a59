// Idle clients: N websocket subscribers that connect, then just stay for HOLD seconds.
//   node idle.mjs URL N HOLD
// Prints {"connected": N} once all are up (the driver then samples the server's memory),
// then one JSON line with how many were still connected at the end and any errors.
import { io } from "socket.io-client";

const [url, n, hold] = process.argv.slice(2);
const clients = Number(n);
const sockets = [];
const errors = [];
let dropped = 0;

function open(i) {
  return new Promise((resolve) => {
    const socket = io(`${url}/job`, { transports: ["websocket"], reconnection: false, forceNew: true });
    socket.on("connect_error", (err) => { errors.push(String(err)); resolve(); });
    socket.on("disconnect", () => { dropped += 1; });
    socket.on("connect", async () => {
      await socket.emitWithAck("subscribe", { job_id: `idle-${i % 100}`, since: null });
      resolve();
    });
    sockets.push(socket);
  });
}

for (let i = 0; i < clients; i += 250) {
  await Promise.all(Array.from({ length: Math.min(250, clients - i) }, (_, j) => open(i + j)));
}
console.log(JSON.stringify({ connected: sockets.filter((s) => s.connected).length }));
await new Promise((r) => setTimeout(r, Number(hold) * 1000));
const still = sockets.filter((s) => s.connected).length;
console.log(JSON.stringify({ clients, still_connected: still, dropped, errors: errors.length,
                             first_error: errors[0] ?? null }));
sockets.forEach((s) => s.close());
process.exit(still === clients ? 0 : 1);
