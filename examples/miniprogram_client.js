// A plain-WebSocket client for Switchboard's /ws, in the style of a mini-program wrapper:
// no Socket.IO library, JSON frames only, resume by seq after a reconnect.
// (In a WeChat mini-program, swap `new WebSocket(url)` for `wx.connectSocket({ url })`.)
//
//   node --experimental-websocket examples/miniprogram_client.js http://127.0.0.1:8001 build-42 [token]
//
// prints each event of the job and exits after a terminal one.

export class Switchboard {
  constructor(url, token) {
    this.url = `${url.replace(/^http/, "ws")}/ws${token ? `?token=${encodeURIComponent(token)}` : ""}`;
    this.pending = new Map();
    this.handlers = new Map();
    this.watchers = new Map(); // job id -> take(job)
    this.last = new Map(); // job id -> last seq seen
    this.refs = 0;
    this.closed = false;
    this.open();
  }

  open() {
    this.ws = new WebSocket(this.url);
    this.ready = new Promise((resolve) => this.ws.addEventListener("open", resolve, { once: true }));
    this.ws.addEventListener("message", ({ data }) => {
      const frame = JSON.parse(data);
      if (frame.event) {
        (this.handlers.get(frame.event) ?? []).forEach((handler) => handler(frame.data));
      } else {
        this.pending.get(frame.ref)?.(frame);
        this.pending.delete(frame.ref);
      }
    });
    this.ws.addEventListener("close", () => {
      if (!this.closed) setTimeout(() => this.reopen(), 1000);
    });
  }

  async reopen() {
    this.open();
    for (const jobId of this.watchers.keys()) await this.subscribe(jobId); // from the last seq
  }

  async call(op, fields = {}) {
    await this.ready;
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

  async subscribe(jobId) {
    const take = this.watchers.get(jobId);
    const ack = await this.call("subscribe", { job_id: jobId, since: this.last.get(jobId) ?? null });
    if (ack.reset) this.last.delete(jobId);
    ack.missed.forEach(take);
    if (ack.job) take(ack.job);
  }

  /** onJob(job) for every event of the job, in order, once each. */
  async watch(jobId, onJob) {
    const take = (job) => {
      if (job.id !== jobId || job.seq <= (this.last.get(jobId) ?? 0)) return;
      this.last.set(jobId, job.seq);
      onJob(job);
    };
    this.watchers.set(jobId, take);
    this.on("job:update", take);
    await this.subscribe(jobId);
  }

  join(room) {
    return this.call("join", { room });
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
  await client.watch(jobId, (job) => {
    console.log(JSON.stringify(job));
    if (["succeeded", "failed", "cancelled"].includes(job.status)) client.close();
  });
}
