// A plain-WebSocket client for Switchboard's /ws, in the style of a mini-program wrapper.
// The class is the one in README.md ("Plain WebSocket /ws"); the test suite checks that
// both copies are the same and runs the README's.
//
//   node --experimental-websocket examples/miniprogram_client.js http://127.0.0.1:8001 build-42 [token]
//
// prints each event of the job and exits after a terminal one.

// switchboard-ws.js: no Socket.IO library, JSON frames, resume by seq after a reconnect.
// In a WeChat mini-program: wx.connectSocket({ url }) and its onOpen, onMessage, onError, onClose.
export class Switchboard {
  constructor(url, token) {
    this.url = `${url.replace(/^http/, "ws")}/ws${token ? `?token=${encodeURIComponent(token)}` : ""}`;
    this.pending = new Map(); // ref -> resolve(answer)
    this.handlers = new Map(); // event -> [handler]
    this.jobs = new Map(); // job id -> { onJob, last seq, early: pushes during a subscribe }
    this.rooms = new Set(); // joined, to rejoin after a reconnect
    this.refs = 0;
    this.closed = false;
    this.connected = false;
    this.up = new Promise((resolve) => (this.wakeUp = resolve)); // resolves on the next open
    this.on("job:update", (job) => this.take(job));
    this.open();
  }

  open() {
    const ws = (this.ws = new WebSocket(this.url));
    ws.addEventListener("open", () => {
      this.connected = true;
      this.wakeUp();
      for (const jobId of this.jobs.keys()) this.subscribe(jobId); // from the last seq seen
      for (const room of this.rooms) this.call("join", { room }).catch((e) => this.fail(e));
    });
    ws.addEventListener("message", ({ data }) => {
      const frame = JSON.parse(data);
      if (frame.event) return this.emit(frame.event, frame.data);
      this.pending.get(frame.ref)?.(frame);
      this.pending.delete(frame.ref);
    });
    let ended = false; // a failed connect: browsers fire error then close, Node only error
    const end = ({ code = 1006 }) => {
      if (ended) return;
      ended = true;
      const lost = { ok: false, error: { code: "disconnected", message: "connection lost" } };
      this.pending.forEach((resolve) => resolve(lost));
      this.pending.clear();
      if (this.connected) this.up = new Promise((resolve) => (this.wakeUp = resolve));
      this.connected = false;
      if (code === 4401) this.closed = true; // the token was refused: retrying will not help
      this.emit("close", code);
      if (!this.closed) setTimeout(() => this.open(), 1000);
    };
    ws.addEventListener("error", end);
    ws.addEventListener("close", end);
  }

  async call(op, fields = {}) {
    await this.up;
    const ref = ++this.refs;
    const answer = new Promise((resolve) => this.pending.set(ref, resolve));
    this.ws.send(JSON.stringify({ op, ref, ...fields }));
    const frame = await answer;
    if (!frame.ok) throw Object.assign(new Error(frame.error.message), frame.error);
    return frame;
  }

  on(event, handler) {
    this.handlers.set(event, [...(this.handlers.get(event) ?? []), handler]);
  }

  emit(event, body) {
    (this.handlers.get(event) ?? []).forEach((handler) => handler(body));
  }

  fail(error) {
    if (error.code !== "disconnected") this.emit("error", error); // else: again on open
  }

  /** onJob(job) for every event of the job, in order, once each. */
  watch(jobId, onJob) {
    this.jobs.set(jobId, { onJob, last: null, early: null });
    if (this.ws.readyState === WebSocket.OPEN) this.subscribe(jobId); // else on open
  }

  take(job) {
    const watch = this.jobs.get(job.id);
    if (!watch) return;
    if (watch.early) return void watch.early.push(job); // a subscribe is in flight
    if (watch.last !== null && job.seq <= watch.last) return; // seen already
    watch.last = job.seq;
    watch.onJob(job);
  }

  async subscribe(jobId) {
    const watch = this.jobs.get(jobId);
    watch.early = [];
    let ack = { missed: [], job: null };
    try {
      ack = await this.call("subscribe", { job_id: jobId, since: watch.last });
    } catch (error) {
      this.fail(error);
    }
    if (ack.reset) watch.last = null;
    const early = watch.early.sort((a, b) => a.seq - b.seq);
    watch.early = null;
    [...ack.missed, ...(ack.job ? [ack.job] : []), ...early].forEach((job) => this.take(job));
  }

  async join(room) {
    const ack = await this.call("join", { room });
    this.rooms.add(room);
    return ack;
  }

  send(room, text) {
    return this.call("message", { room, text });
  }

  close() {
    this.closed = true;
    this.ws.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [url, jobId, token] = process.argv.slice(2);
  const client = new Switchboard(url, token);
  client.on("error", (error) => console.error(error.code, error.message));
  client.on("close", (code) => code === 4401 && process.exit(4));
  client.watch(jobId, (job) => {
    console.log(JSON.stringify(job));
    if (["succeeded", "failed", "cancelled"].includes(job.status)) client.close();
  });
}
