// Runs the README's plain-WebSocket class (copied out of README.md into CLASS_FILE):
//
//   node --experimental-websocket ws-driver.mjs CLASS_FILE URL JOB ROOM [TOKEN]
//
// Prints one JSON line per thing that happens: {"joined"}, {"sent"}, {"job"} for each event
// of JOB, {"error"}, {"closed"}. After a terminal event it sends to ROOM again (which needs the
// room rejoined after any reconnect) and closes; it exits 4 when refused.
import { pathToFileURL } from "node:url";

const [file, url, jobId, room, token] = process.argv.slice(2);
const { Switchboard } = await import(pathToFileURL(file).href);
const print = (line) => console.log(JSON.stringify(line));

const client = new Switchboard(url, token);
client.on("error", (error) => print({ error: error.code }));
client.on("close", (code) => {
  print({ closed: code });
  if (code === 4401) process.exit(4);
});
client.watch(jobId, async (job) => {
  print({ job: job.seq, status: job.status, progress: job.progress });
  if (["succeeded", "failed", "cancelled"].includes(job.status)) {
    print({ sent: (await client.send(room, "at the end")).message.text });
    client.close();
  }
});
const joined = await client.join(room);
print({ joined: joined.room, members: joined.members.length });
const sent = await client.send(room, "hello from /ws");
print({ sent: sent.message.text });
