#!/usr/bin/env python3
"""Render switchboard.conf.template with the nodes and port of a deployment.

    python3 nginx/render.py --listen 80 --node 10.0.0.5:8001 --node 10.0.0.6:8001 \
        > /etc/nginx/conf.d/switchboard.conf

--standalone DIR writes a complete nginx.conf that runs from DIR without root-owned
paths (what the tests use): nginx -p DIR -c DIR/nginx.conf
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

STANDALONE = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 4096; }}

http {{
    access_log off;  # the site logs to {dir}/access.log
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

{site}
}}
"""


def render_site(listen: str, nodes: list[str], access_log: str) -> str:
    template = (HERE / "switchboard.conf.template").read_text()
    servers = "\n".join(f"    server {node} max_fails=1 fail_timeout=2s;" for node in nodes)
    values = {"{{NODES}}": servers, "{{LISTEN}}": listen, "{{ACCESS_LOG}}": access_log}
    for name, value in values.items():
        template = template.replace(name, value)
    return template


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="port or address:port for nginx")
    parser.add_argument("--node", action="append", required=True, help="host:port of a node")
    parser.add_argument("--standalone", metavar="DIR", help="write DIR/nginx.conf, runnable")
    parser.add_argument(
        "--access-log", default="/var/log/nginx/switchboard.access.log", help="access log path"
    )
    args = parser.parse_args(argv)
    if args.standalone is None:
        sys.stdout.write(render_site(args.listen, args.node, args.access_log))
        return 0
    directory = Path(args.standalone).resolve()
    site = render_site(args.listen, args.node, str(directory / "access.log"))
    directory.mkdir(parents=True, exist_ok=True)
    indented = "\n".join(f"    {line}" if line else "" for line in site.splitlines())
    user = "user root;" if os.geteuid() == 0 else ""
    (directory / "nginx.conf").write_text(
        STANDALONE.format(dir=directory, user=user, site=indented)
    )
    print(directory / "nginx.conf")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
