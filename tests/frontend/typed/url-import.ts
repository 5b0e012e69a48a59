// The README's URL import, typed through tsconfig.json's "paths" as the README shows.
import { type Job, watchJob } from "http://127.0.0.1:8001/switchboard.js";

export const stop: () => void = watchJob("build-42", (job: Job) => console.log(job.seq));
