// N websocket clients of /job, connected 250 at a time, client i subscribed to jobFor(i)
// on url, or on url(i) when url is a function (clients spread over several servers).
// setup(socket) adds listeners before it connects; extra (e.g. { log_since: 0 }) is added
// to every subscribe. Resolves to { sockets, errors, acks } (acks[i]: client i's answer).
import { io } from "socket.io-client";

export async function subscribers(url, count, jobFor, setup = () => {}, extra = {}) {
  const sockets = [];
  const errors = [];
  const acks = [];
  const open = (i) => new Promise((resolve) => {
    const base = typeof url === "function" ? url(i) : url;
    const socket = io(`${base}/job`, { transports: ["websocket"], reconnection: false, forceNew: true });
    setup(socket);
    socket.on("connect_error", (err) => { errors.push(String(err)); resolve(); });
    socket.on("connect", async () => {
      acks[i] = await socket.emitWithAck("subscribe", { job_id: jobFor(i), since: null, ...extra });
      resolve();
    });
    sockets.push(socket);
  });
  for (let i = 0; i < count; i += 250) {
    await Promise.all(Array.from({ length: Math.min(250, count - i) }, (_, j) => open(i + j)));
  }
  return { sockets, errors, acks };
}
