// Scenarios for the official socket.io-client against a running Switchboard.
//
//   node scenarios.mjs SCENARIO
//
// Environment: SWITCHBOARD_URL, SWITCHBOARD_ADMIN_TOKEN, TRANSPORT (websocket | polling |
// upgrade), and CLIENT_TOKEN where the server wants one. Exits 0 when the scenario held,
// 1 with the reason on stderr otherwise. tests/test_node_client.py runs each one.
import assert from "node:assert/strict";
import { io } from "socket.io-client";

const url = process.env.SWITCHBOARD_URL;
const admin = process.env.SWITCHBOARD_ADMIN_TOKEN;
const transport = process.env.TRANSPORT ?? "upgrade";
const transports = transport === "upgrade" ? undefined : [transport];
const opened = [];

function connect(namespace, auth = {}) {
  const socket = io(url + namespace, { transports, auth, reconnectionDelay: 100, reconnectionDelayMax: 500 });
  opened.push(socket);
  return socket;
}

function once(socket, event, timeout = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${timeout} ms`)), timeout);
    socket.once(event, (value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

async function connected(socket) {
  if (!socket.connected) await once(socket, "connect");
  if (transport === "upgrade" && socket.io.engine.transport.name !== "websocket") {
    await once(socket.io.engine, "upgrade");
  }
  const want = transport === "polling" ? "polling" : "websocket";
  assert.equal(socket.io.engine.transport.name, want);
  return socket;
}

async function post(path, body) {
  const response = await fetch(url + path, {
    method: "POST",
    headers: { Authorization: `Bearer ${admin}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

async function until(check, timeout = 10000) {
  const deadline = Date.now() + timeout;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met in ${timeout} ms: ${check}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const ask = (socket, event, payload) => socket.timeout(10000).emitWithAck(event, payload);
const unique = (prefix) => `${prefix}-${transport}-${Date.now()}-${Math.floor(Math.random() * 1e6)}`;

const scenarios = {
  async subscribe() {
    const jobs = await connected(connect("/job", { token: process.env.CLIENT_TOKEN }));
    const id = unique("node-sub");
    const seen = [];
    jobs.on("job:update", (job) => seen.push(job));
    const ack = await ask(jobs, "subscribe", { job_id: id, since: null });
    assert.deepEqual(ack, { ok: true, job: null, missed: [], reset: false });
    for (let step = 1; step <= 10; step++) await post(`/api/jobs/${id}/updates`, { progress: step * 10 });
    await until(() => seen.length === 10);
    assert.deepEqual(seen.map((job) => job.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.equal(seen.at(-1).progress, 100);
  },

  async resume() {
    const jobs = await connected(connect("/job", { token: process.env.CLIENT_TOKEN }));
    const id = unique("node-resume");
    const seen = [];
    let last = null;
    const take = (job) => {
      if (last !== null && job.seq <= last) return;
      assert.equal(job.seq, (last ?? 0) + 1, "a gap");
      last = job.seq;
      seen.push(job.seq);
    };
    jobs.on("job:update", take);
    const subscribe = async () => {
      const ack = await ask(jobs, "subscribe", { job_id: id, since: last });
      assert.equal(ack.ok, true);
      assert.equal(ack.reset, false);
      ack.missed.forEach(take);
    };
    await subscribe();
    for (let step = 1; step <= 3; step++) await post(`/api/jobs/${id}/updates`, { progress: step });
    await until(() => seen.length === 3);

    jobs.io.engine.close(); // the transport drops; the manager reconnects by itself
    await until(() => !jobs.connected);
    for (let step = 4; step <= 7; step++) await post(`/api/jobs/${id}/updates`, { progress: step });
    await connected(jobs);
    await subscribe();
    await post(`/api/jobs/${id}/updates`, { status: "succeeded" });
    await until(() => seen.length === 8);
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 8]);
  },

  async chat() {
    const room = unique("room");
    const ann = await connected(connect("/info", { token: process.env.CLIENT_TOKEN, name: "Ann" }));
    const bob = await connected(connect("/info", { token: process.env.CLIENT_TOKEN, name: "Bob" }));
    assert.equal((await ask(ann, "join", { room })).ok, true);
    const presence = once(ann, "presence");
    const joined = await ask(bob, "join", { room });
    assert.deepEqual(joined.members.map((m) => m.id), ["node"]); // one identity, two tabs
    assert.equal((await presence).room, room);
    const heard = once(ann, "message");
    const sent = await ask(bob, "message", { room, text: "hello from node" });
    assert.equal(sent.ok, true);
    assert.deepEqual(await heard, sent.message);
    assert.equal(sent.message.text, "hello from node");
  },

  async announce() {
    const info = await connected(connect("/info", { token: process.env.CLIENT_TOKEN }));
    const heard = once(info, "announcement");
    const posted = await post("/api/announcements", { text: "node says hi", level: "critical" });
    assert.deepEqual(await heard, posted);
  },

  async errors() {
    const jobs = await connected(connect("/job", { token: process.env.CLIENT_TOKEN }));
    const bad = await ask(jobs, "subscribe", { job_id: "not a valid id" });
    assert.equal(bad.ok, false);
    assert.equal(bad.error.code, "invalid_payload");
    const noted = once(jobs, "error");
    jobs.emit("subscribe", "not an object");
    const notice = await noted;
    assert.equal(notice.event, "subscribe");
    assert.equal(notice.error.code, "invalid_payload");
    assert.equal((await ask(jobs, "subscribe", { job_id: "fine" })).ok, true);
  },

  // One client of a cluster: ORDER_COUNT updates of ORDER_JOB must arrive as one
  // exact sequence after the subscribe (test_cluster.py publishes once this prints).
  async ordered() {
    const jobs = await connected(connect("/job"));
    const seqs = [];
    jobs.on("job:update", (job) => seqs.push(job.seq));
    const ack = await ask(jobs, "subscribe", { job_id: process.env.ORDER_JOB });
    assert.equal(ack.ok, true);
    const start = ack.job ? ack.job.seq : 0;
    console.log(`subscribed ${start}`);
    const count = Number(process.env.ORDER_COUNT);
    await until(() => seqs.includes(start + count), 30000);
    const after = seqs.filter((seq) => seq > start);
    assert.deepEqual(after, Array.from({ length: count }, (_, i) => start + i + 1));
  },

  // The victim of an upgrade hijack: test_security.py opens a websocket with this
  // client's Engine.IO sid as soon as it appears; every update must still come here.
  async victim() {
    const jobs = connect("/job", { token: process.env.CLIENT_TOKEN });
    await once(jobs, "connect");
    const seqs = [];
    jobs.on("job:update", (job) => seqs.push(job.seq));
    assert.equal((await ask(jobs, "subscribe", { job_id: "victim" })).ok, true);
    await new Promise((resolve) => setTimeout(resolve, 500)); // the upgrade, or its refusal
    for (let i = 1; i <= 20; i++) await post("/api/jobs/victim/updates", { progress: i * 5 });
    await until(() => seqs.length >= 20, 15000);
    assert.deepEqual(seqs, Array.from({ length: 20 }, (_, i) => i + 1));
  },

  async tag() {
    const tag = unique("user");
    const jobs = await connected(connect("/job", { token: process.env.CLIENT_TOKEN }));
    const seen = [];
    const summaries = [];
    jobs.on("job:update", (job) => seen.push([job.id, job.seq]));
    jobs.on("job:children", (summary) => summaries.push(summary));
    const parent = unique("batch");
    await post(`/api/jobs/${parent}/updates`, { status: "running", tags: [tag] });
    const ack = await ask(jobs, "subscribe", { tag });
    assert.equal(ack.ok, true);
    assert.deepEqual(ack.jobs.map((job) => job.id), [parent]);
    assert.equal((await ask(jobs, "subscribe", { job_id: parent })).ok, true);
    const child = unique("part");
    await post(`/api/jobs/${child}/updates`, { parent, tags: [tag], progress: 50 });
    await post(`/api/jobs/${child}/updates`, { status: "succeeded", progress: 100 });
    await post(`/api/jobs/${unique("other")}/updates`, { progress: 1 }); // no tag: not sent
    await post(`/api/jobs/${parent}/updates`, { status: "succeeded" });
    await until(() => seen.some(([id, seq]) => id === parent && seq === 2));
    // The parent's events reach it once even though it is in two of its rooms.
    assert.deepEqual(seen, [[child, 1], [child, 2], [parent, 2]]);
    await until(() => summaries.some((s) => s.by_status.succeeded === 1));
    assert.equal(summaries.at(-1).total, 1);
  },

  async refresh() {
    const mint = async (ttl) => (await post("/api/tokens", { sub: "node", ttl, jobs: ["*"] }));
    const first = await mint(2);
    const socket = connect("/job", { token: first.token });
    const noticed = once(socket, "token:expiring"); // sent at once: under a minute left
    const jobs = await connected(socket);
    const notice = await noticed;
    assert.ok(notice.expires_in <= 2);
    const next = await mint(600);
    const ack = await ask(jobs, "refresh", { token: next.token });
    assert.equal(ack.ok, true);
    assert.ok(ack.expires_in > 590);
    const id = unique("node-refresh");
    const seen = [];
    jobs.on("job:update", (job) => seen.push(job.seq));
    assert.equal((await ask(jobs, "subscribe", { job_id: id })).ok, true);
    await new Promise((resolve) => setTimeout(resolve, 2500)); // past the first token's exp
    await post(`/api/jobs/${id}/updates`, { progress: 1 });
    await until(() => seen.length === 1);
    assert.equal(jobs.connected, true);

    const errors = [];
    jobs.on("error", (body) => errors.push(body));
    const gone = once(jobs, "disconnect");
    await post("/api/tokens/revoke", { jti: next.jti });
    assert.equal(await gone, "io server disconnect"); // no reconnect after this one
    assert.deepEqual(errors.map((e) => e.error.code), ["unauthorized"]);
    const again = connect("/job", { token: next.token });
    assert.equal((await once(again, "connect_error")).message, "unauthorized");
  },

  async unauthorized() {
    for (const namespace of ["/job", "/info"]) {
      const socket = connect(namespace, { token: "not-a-token" });
      const error = await once(socket, "connect_error");
      assert.equal(error.message, "unauthorized");
      socket.close();
    }
  },
};

const name = process.argv[2];
try {
  assert.ok(scenarios[name], `unknown scenario ${name}`);
  await scenarios[name]();
  console.log(`${name} over ${transport}: ok`);
} catch (error) {
  console.error(`${name} over ${transport}: ${error.stack ?? error}`);
  process.exitCode = 1;
} finally {
  opened.forEach((socket) => socket.close());
}
