// A typed app on the switchboard-client package (`switchboard client-js`, npm installed):
// `tsc --noEmit` must accept every use below, and refuse each line marked @ts-expect-error.
import {
  type ConnectionState,
  type Job,
  type JobEvent,
  type JobStatus,
  type Room,
  type SwitchboardError,
  TERMINAL,
  configure,
  joinRoom,
  onAnnouncement,
  onConnection,
  recentAnnouncements,
  socket,
  watchAllJobs,
  watchJob,
} from "switchboard-client";

configure({ url: "https://events.example.com", token: "jwt", name: "Ann", transports: ["websocket"] });

const progress: Array<number | null> = [];
const stop: () => void = watchJob(
  "build-42",
  (job: JobEvent) => {
    progress.push(job.progress);
    const done: boolean = TERMINAL.has(job.status);
    const seq: number = job.seq;
    const artifact: unknown = job.data.artifact;
    console.log(done, seq, artifact, job.message?.toUpperCase(), job.created_at.slice(0, 10));
  },
  { since: 0, onError: (error: SwitchboardError) => console.error(error.code, error.message) },
);
stop();

const latest = new Map<string, Job>();
const stopAll = watchAllJobs((job) => latest.set(job.id, job), { onError: (e) => e.code });
stopAll();

async function chat(): Promise<string> {
  const room: Room = await joinRoom("math-101", {
    onMessage: (message) => console.log(message.sender.name ?? message.sender.id, message.text),
    onPresence: (presence) => console.log(presence.joined?.id ?? presence.left?.id),
  });
  const sent = await room.send("hello");
  await room.leave();
  return `${room.history.length} ${room.members.length} ${sent.ts}`;
}

async function news(): Promise<string[]> {
  const stopNews = onAnnouncement((a) => console.log(a.level, a.text, a.room));
  stopNews();
  return (await recentAnnouncements(5)).map((a) => a.text);
}

const states: ConnectionState[] = [];
const stopWatching = onConnection((state) => states.push(state), "/info");
stopWatching();
const transport: "polling" | "websocket" | null = states[0]?.transport ?? null;

const jobs = socket("/job");
jobs.on("job:update", (job: Job) => console.log(job.id));
const connected: boolean = jobs.connected && jobs.io.engine.transport.name === "websocket";

try {
  await chat();
} catch (error) {
  const code: string = (error as SwitchboardError).code;
  console.log(code);
}
console.log(news, transport, connected);

// @ts-expect-error: not a status
const wrong: JobStatus = "done";
// @ts-expect-error: a job id is a string
watchJob(42, () => {});
// @ts-expect-error: the callback gets a Job, whose progress is a number or null
watchJob("x", (job) => job.progress.toFixed());
// @ts-expect-error: only the two namespaces
socket("/other");
// @ts-expect-error: no such option
configure({ host: "example.com" });
// @ts-expect-error: stop functions take nothing and return nothing useful
const result: Promise<void> = stop();
console.log(wrong, result);
