"""Follow a job to its end with the async client; exit 0 if it succeeded.

    python examples/watch.py build-42 [--url http://127.0.0.1:8001] [--token JWT]

The stream resumes by seq after a dropped connection: no gap, no duplicate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

from switchboard_client import SwitchboardClient


async def follow(url: str, job: str, token: str | None) -> str:
    status = "unknown"
    async with SwitchboardClient(url, token=token) as client:
        async for event in client.watch(job):
            status = event["status"]
            print(json.dumps(event), flush=True)
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job")
    parser.add_argument("--url", default=os.environ.get("SWITCHBOARD_URL", "http://127.0.0.1:8001"))
    parser.add_argument("--token", default=os.environ.get("SWITCHBOARD_TOKEN"))
    args = parser.parse_args()
    status = asyncio.run(follow(args.url, args.job, args.token))
    raise SystemExit(0 if status == "succeeded" else 1)


if __name__ == "__main__":
    main()
