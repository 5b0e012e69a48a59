// Between the app and Switchboard's module (see build.mjs): every export passes through
// unchanged, and watchJob() also logs the seqs each caller receives, in order, in
// window.seen: [{ job, seqs: [...] }], one entry per call.
import { watchJob as watch } from "switchboard:module";

export * from "switchboard:module";

window.seen = [];

export function watchJob(jobId, onEvent, options) {
  const log = { job: jobId, seqs: [] };
  window.seen.push(log);
  return watch(
    jobId,
    (job) => {
      log.seqs.push(job.seq);
      onEvent(job);
    },
    options,
  );
}
