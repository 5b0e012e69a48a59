"""A synchronous worker that reports its progress to Switchboard.

    SWITCHBOARD_ADMIN_TOKEN=... python examples/worker.py build-42 --steps 10

Every update carries an Idempotency-Key that its retries reuse, and the blocking
client retries connection errors and 503s with backoff: the worker rides through a
server restart without losing or doubling an update.
"""

from __future__ import annotations

import argparse
import os
import time

from switchboard_client import Admin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", help="the job id to report on")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds of 'work' per step")
    parser.add_argument("--url", default=os.environ.get("SWITCHBOARD_URL", "http://127.0.0.1:8001"))
    args = parser.parse_args()

    token = os.environ.get("SWITCHBOARD_ADMIN_TOKEN")
    with Admin(args.url, token, retries=20, backoff=0.2) as admin:
        admin.update_job(args.job, status="running", progress=0, message="starting")
        for step in range(1, args.steps + 1):
            time.sleep(args.pause)  # the real work goes here
            progress = round(100 * step / args.steps, 1)
            admin.update_job(args.job, progress=progress, message=f"step {step}/{args.steps}")
            print(f"{args.job}: {progress}%", flush=True)
        admin.update_job(args.job, status="succeeded", message="done", data={"steps": args.steps})


if __name__ == "__main__":
    main()
