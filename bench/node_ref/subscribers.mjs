// N websocket clients of /job, connected 250 at a time, client i subscribed to jobFor(i)
// on url, or on url(i) when url is a function (clients spread over several servers).
// setup(socket) adds listeners before it connects. Resolves to { sockets, errors }.
import { io } from "socket.io-client";

export async function subscribers(url, count, jobFor, setup = () => {}) {
  const sockets = [];
  const errors = [];
  const open = (i) => new Promise((resolve) => {
    const base = typeof url === "function" ? url(i) : url;
    const socket = io(`${base}/job`, { transports: ["websocket"], reconnection: false, forceNew: true });
    setup(socket);
    socket.on("connect_error", (err) => { errors.push(String(err)); resolve(); });
    socket.on("connect", async () => {
      await socket.emitWithAck("subscribe", { job_id: jobFor(i), since: null });
      resolve();
    });
    sockets.push(socket);
  });
  for (let i = 0; i < count; i += 250) {
    await Promise.all(Array.from({ length: Math.min(250, count - i) }, (_, j) => open(i + j)));
  }
  return { sockets, errors };
}
