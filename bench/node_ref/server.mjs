// The reference: Node socket.io 4.8 with the same /job subscribe + job:update broadcast.
//   node server.mjs PORT
// POST /publish?job=ID&n=K emits K job:update events to the job's room, each stamped.
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.argv[2] ?? 8100);
const seqs = new Map();
const http = createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  if (req.method === "POST" && url.pathname === "/publish") {
    const job = url.searchParams.get("job");
    const n = Number(url.searchParams.get("n") ?? 1);
    for (let i = 0; i < n; i++) {
      const seq = (seqs.get(job) ?? 0) + 1;
      seqs.set(job, seq);
      io.of("/job").to(`job:${job}`).emit("job:update", {
        id: job, status: "running", progress: null, message: null,
        data: { t: Date.now() }, seq, created_at: "", updated_at: "",
      });
    }
    res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ ok: true }));
    return;
  }
  res.writeHead(404).end();
});
const io = new Server(http, { cors: { origin: "*" } });
io.of("/job").on("connection", (socket) => {
  socket.on("subscribe", ({ job_id }, ack) => {
    socket.join(`job:${job_id}`);
    ack?.({ ok: true, job: null, missed: [], reset: false });
  });
});
http.listen(port, "127.0.0.1", () => console.log(`listening on ${port}`));
