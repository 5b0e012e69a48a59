// The reference: Node socket.io 4.8 with the same /job subscribe + job:update broadcast.
//   node server.mjs PORT
// POST /api/jobs/ID/updates with a JSON body emits one job:update to the job's room, as
// Switchboard's HTTP API does (without validation, storage or auth: a lower bound).
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.argv[2] ?? 8100);
const seqs = new Map();
const http = createServer(async (req, res) => {
  const match = /^\/api\/jobs\/([^/]+)\/updates$/.exec(req.url);
  if (req.method !== "POST" || !match) {
    res.writeHead(404).end();
    return;
  }
  let body = "";
  for await (const chunk of req) body += chunk;
  const change = JSON.parse(body);
  const id = match[1];
  const seq = (seqs.get(id) ?? 0) + 1;
  seqs.set(id, seq);
  const now = new Date().toISOString();
  const job = {
    id, status: "running", progress: change.progress ?? null, message: change.message ?? null,
    data: change.data ?? null, seq, created_at: now, updated_at: now,
  };
  io.of("/job").to(`job:${id}`).emit("job:update", job);
  res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(job));
});
const io = new Server(http, { cors: { origin: "*" } });
io.of("/job").on("connection", (socket) => {
  socket.on("subscribe", ({ job_id }, ack) => {
    socket.join(`job:${job_id}`);
    ack?.({ ok: true, job: null, missed: [], reset: false });
  });
});
http.listen(port, "127.0.0.1", () => console.log(`listening on ${port}`));
