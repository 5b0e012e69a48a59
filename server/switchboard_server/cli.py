"""`switchboard`: serve, and the client commands (watch, jobs, publish, announce, chat, token)."""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import logging
import shutil
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, NoReturn, TypeVar, Union, cast, get_args, get_origin

import typer
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text
from switchboard_client import UNSET, Admin, SwitchboardClient, SwitchboardError

from . import __version__
from .assets import STATIC
from .origins import is_loopback
from .settings import Flag, Settings

app = typer.Typer(
    help="Switchboard: a realtime event server. Publish over HTTP, listen over Socket.IO.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)
log = logging.getLogger("switchboard")

EXIT_FAILED, EXIT_CANCELLED, EXIT_ERROR = 1, 3, 4
Command = TypeVar("Command", bound=Callable[..., Any])

# Options shared by the client commands.
Url = Annotated[
    str,
    typer.Option(envvar="SWITCHBOARD_URL", help="Where the server is."),
]
AdminToken = Annotated[
    str | None,
    typer.Option(envvar="SWITCHBOARD_ADMIN_TOKEN", help="Admin token for the HTTP API."),
]
ClientToken = Annotated[
    str | None,
    typer.Option(envvar="SWITCHBOARD_TOKEN", help="Client token (JWT) for socket connections."),
]
DEFAULT_URL = "http://127.0.0.1:8001"


def _version(value: bool) -> None:
    if value:
        out.print(f"switchboard {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Switchboard: publish over HTTP, listen over Socket.IO."""


def _options_from(model: type[BaseSettings]) -> Callable[[Command], Command]:
    """Give a command one option per field of `model`, named and explained by the field.

    Each option defaults to None, so only what the command line or the field's environment
    variable gives reaches the command: the model fills in the rest, with the same
    variables, then its defaults (flag > variable > default)."""

    def attach(command: Command) -> Command:
        options = [_option(name, field, model) for name, field in model.model_fields.items()]
        cast(Any, command).__signature__ = inspect.Signature(options)
        return command

    return attach


def _option(name: str, field: FieldInfo, model: type[BaseSettings]) -> inspect.Parameter:
    flag = next((item for item in field.metadata if isinstance(item, Flag)), Flag())
    value_type = _value_type(field.annotation)
    help_text = (field.description or "").removesuffix(".")
    choices = get_args(value_type) if get_origin(value_type) is Literal else ()
    if choices:  # listed in the help: in the type column they squeeze the help into a sliver
        *others, last = map(str, choices)
        help_text += f" ({', '.join(others)} or {last})" if others else f" ({last})"
    default = _shown_default(field, flag)
    if default:
        help_text += f" [default: {default}]"
    option = typer.Option(
        *flag.names,
        envvar=f"{model.model_config.get('env_prefix', '')}{name}".upper(),
        help=escape(f"{help_text}."),  # else rich takes "[default: …]" for markup, drops it
        metavar=flag.metavar,
        show_choices=not choices,
        show_default=False,  # the default is None: the model's is in the help text
    )
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[value_type | None, option],
    )


def _value_type(annotation: Any) -> Any:
    """The option's type for a field's: a secret is text, and a list one comma-separated
    value, as in the environment (the field splits it, like cors_origins)."""
    annotation = _required(annotation)
    if annotation is SecretStr or get_origin(annotation) is list:
        return str
    return annotation


def _required(annotation: Any) -> Any:
    """`X` for `X | None`."""
    kinds = [kind for kind in get_args(annotation) if kind is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(kinds) == 1:
        return kinds[0]
    return annotation


def _shown_default(field: FieldInfo, flag: Flag) -> str:
    if flag.shown_default is not None:
        return flag.shown_default
    if field.is_required() or _required(field.annotation) is SecretStr:  # never say a secret
        return ""
    value = field.get_default(call_default_factory=True)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "" if value is None else str(value)


@app.command()
@_options_from(Settings)
def serve(**given: Any) -> None:
    """Run the server (Socket.IO at /socket.io/, HTTP API at /api, dashboard at /)."""
    given = {name: value for name, value in given.items() if value is not None}
    from aiohttp import web

    from . import create_app, logs
    from .http_api import AUTH
    from .storage import describe_store

    try:
        settings = Settings(**given)
    except ValidationError as exc:
        _fail(f"bad configuration: {exc}", code=2)
    logs.configure(settings.log_level, settings.log_format)
    loop = _new_loop(settings.event_loop)
    asyncio.set_event_loop(loop)
    application = create_app(settings)
    auth = application[AUTH]
    log.info("switchboard %s serving on %s", __version__, settings.url)
    log.info("store: %s", describe_store(settings.store))
    log.info(
        "auth: admin token %s; sockets: %s",
        "generated" if auth.admin_token_generated else "from configuration",
        auth.mode,
    )
    if auth.client_secret is None:
        log.warning("no client secret: any client may connect and watch any job")
    log.info("event loop: %s", type(loop).__module__.split(".")[0])
    raised = raise_fd_limit()
    if raised:
        log.info("open files limit raised to %d", raised)
    log.info("CORS: %s", ", ".join(settings.cors_origins) or "same origin only")
    if not settings.cors_origins and not is_loopback(settings.host):
        log.warning(
            "serving on %s without --cors-origins: the same-origin check trusts the Host"
            " header, which DNS rebinding can forge; list your sites' origins in production",
            settings.host,
        )
    log.info(
        "admin UI: %s",
        f"{settings.url}/admin-ui/ (user admin, the admin token as password)"
        if settings.admin_ui
        else "off (--admin-ui turns it on)",
    )
    if auth.admin_token_generated:
        print(f"admin token (generated, shown once): {auth.admin_token}", file=sys.stderr)
    # Everything built so far lives as long as the process: keep it out of every
    # future full collection, whose pause grows with the objects it has to scan.
    gc.collect()
    gc.freeze()
    web.run_app(application, host=settings.host, port=settings.port, print=None, loop=loop)


def _new_loop(choice: str) -> asyncio.AbstractEventLoop:
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                _fail("--event-loop uvloop: uvloop is not installed", code=2)
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def raise_fd_limit() -> int | None:
    """Lift the soft open-files limit to the hard one: each client holds a descriptor."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        return None
    return wanted


@app.command()
def watch(
    job: Annotated[str, typer.Argument(help="The job id to follow.")],
    url: Url = DEFAULT_URL,
    token: ClientToken = None,
    transport: Annotated[
        str | None, typer.Option(help="websocket or polling [default: polling, then upgrade].")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each event as a JSON line.")
    ] = False,
    logs: Annotated[
        bool,
        typer.Option("--logs", help="Print the job's log lines too (with --json: each batch)."),
    ] = False,
) -> None:
    """Follow a job live until it ends. Exit 0 when it succeeded, 1 failed, 3 cancelled."""
    transports = [transport] if transport else None
    final = _run(_watch(job, url, token, transports, as_json, logs))
    if final == "succeeded":
        raise typer.Exit(0)
    raise typer.Exit(EXIT_CANCELLED if final == "cancelled" else EXIT_FAILED)


async def _watch(
    job: str,
    url: str,
    token: str | None,
    transports: list[str] | None,
    as_json: bool,
    logs: bool = False,
) -> str:
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]} {task.fields[message]}"),
    )
    status = "unknown"
    # Log lines go to stdout as they are (see _print_lines), so stdout is not redirected.
    with Progress(*columns, console=err, disable=as_json, redirect_stdout=False) as bar:
        task = bar.add_task(job, total=None, status="waiting", message="")
        async with SwitchboardClient(url, token=token, transports=transports) as client:
            async for event in client.watch(job, logs=logs):
                if as_json:
                    print(json.dumps(event), flush=True)
                if "lines" in event:
                    if not as_json:
                        _print_lines(event["lines"], bar.console)
                    continue
                status = event["status"]
                progress = event["progress"]
                if status == "succeeded" and progress is None:
                    progress = 100
                bar.update(
                    task,
                    total=None if progress is None else 100,
                    completed=progress or 0,
                    status=status,
                    message=event["message"] or "",
                )
    if not as_json:
        err.print(f"{job}: {status}")
    return status


def _print_lines(lines: list[dict[str, Any]], live: Console) -> None:
    """Log lines to stdout as they are; on a terminal with colours but no other escape
    sequence, and above the live bar when that is on the same terminal."""
    if not out.is_terminal:
        sys.stdout.write("".join(line["text"] + "\n" for line in lines))
        sys.stdout.flush()
        return
    console = live if live.is_terminal else out
    for line in lines:
        console.print(Text.from_ansi(line["text"]), soft_wrap=True)


@app.command()
def jobs(
    status: Annotated[str | None, typer.Option(help="Only jobs with this status.")] = None,
    limit: Annotated[int, typer.Option(help="How many.")] = 50,
    url: Url = DEFAULT_URL,
    admin_token: AdminToken = None,
) -> None:
    """List recent jobs, newest first."""
    with Admin(url, admin_token, retries=1) as admin:
        found = _call(lambda: admin.list_jobs(status, limit))
    table = Table("id", "status", "progress", "message", "seq", "updated")
    for item in found:
        progress = "" if item["progress"] is None else f"{item['progress']:.0f}%"
        table.add_row(
            item["id"], item["status"], progress, item["message"] or "",
            str(item["seq"]), item["updated_at"],
        )  # fmt: skip
    out.print(table)


@app.command()
def publish(
    job: Annotated[str, typer.Argument(help="The job id (created if unknown).")],
    status: Annotated[
        str | None, typer.Option(help="queued, running, succeeded, failed or cancelled.")
    ] = None,
    progress: Annotated[float | None, typer.Option(help="0 to 100.")] = None,
    message: Annotated[str | None, typer.Option(help="The latest step.")] = None,
    data: Annotated[str | None, typer.Option(help="A JSON object (replaces data).")] = None,
    url: Url = DEFAULT_URL,
    admin_token: AdminToken = None,
) -> None:
    """Post one update to a job and print the new state."""
    fields: dict[str, Any] = {
        "status": status if status is not None else UNSET,
        "progress": progress if progress is not None else UNSET,
        "message": message if message is not None else UNSET,
    }
    if data is not None:
        try:
            fields["data"] = json.loads(data)
        except ValueError as exc:
            _fail(f"--data is not JSON: {exc}")
    with Admin(url, admin_token) as admin:
        result = _call(lambda: admin.update_job(job, **fields))
    out.print_json(data=result)


@app.command()
def announce(
    text: Annotated[str, typer.Argument(help="What to announce.")],
    level: Annotated[str, typer.Option(help="info, warning or critical.")] = "info",
    room: Annotated[str | None, typer.Option(help="Only to this chat room.")] = None,
    url: Url = DEFAULT_URL,
    admin_token: AdminToken = None,
) -> None:
    """Announce to every /info client, or to one room."""
    with Admin(url, admin_token) as admin:
        result = _call(lambda: admin.announce(text, level=level, room=room))
    out.print_json(data=result)


@app.command()
def cancel(
    job: Annotated[str, typer.Argument(help="The job's id.")],
    url: Url = DEFAULT_URL,
    admin_token: AdminToken = None,
) -> None:
    """Ask a job's worker to stop; the worker's final update says `cancelled`."""
    with Admin(url, admin_token) as admin:
        result = _call(lambda: admin.cancel_job(job))
    out.print_json(data=result)


@app.command()
def token(
    sub: Annotated[str, typer.Argument(help="Whom the token is for (the JWT sub).")],
    name: Annotated[str | None, typer.Option(help="Display name in chat.")] = None,
    job: Annotated[
        list[str] | None,
        typer.Option("--job", help="Job id glob it may watch (repeatable; none: no job)."),
    ] = None,
    room: Annotated[
        list[str] | None,
        typer.Option("--room", help="Room glob it may join (repeatable; none: no room)."),
    ] = None,
    cancel: Annotated[
        list[str] | None,
        typer.Option("--cancel", help="Job id glob it may cancel (repeatable; none: no job)."),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", help="Tag glob whose jobs it may follow (repeatable; none: no tag)."),
    ] = None,
    ttl: Annotated[int, typer.Option(help="Seconds until it expires.")] = 3600,
    url: Url = DEFAULT_URL,
    admin_token: AdminToken = None,
) -> None:
    """Mint a client token (the server needs a client secret)."""
    grants = {"jobs": job or UNSET, "rooms": room or UNSET, "cancel": cancel or UNSET,
              "tags": tag or UNSET}  # fmt: skip
    with Admin(url, admin_token) as admin:
        result = _call(lambda: admin.mint_token(sub, name=name or UNSET, ttl=ttl, **grants))
    print(result["token"])
    err.print(f"expires at {result['expires_at']}")


@app.command()
def chat(
    room: Annotated[str, typer.Argument(help="The room to join.")],
    name: Annotated[str | None, typer.Option(help="Your display name.")] = None,
    url: Url = DEFAULT_URL,
    token: ClientToken = None,
) -> None:
    """Join a chat room: type lines to send them, see the room live. Ctrl-D leaves."""
    _run(_chat(room, name, url, token))


async def _chat(room: str, name: str | None, url: str, token: str | None) -> None:
    def show(message: dict[str, Any]) -> None:
        sender = message["sender"]["name"] or message["sender"]["id"]
        out.print(f"[dim]{message['ts'][11:19]}[/] [bold]{sender}[/]: {message['text']}")

    def presence(body: dict[str, Any]) -> None:
        change = "joined" if "joined" in body else "left"
        who = body[change]
        out.print(f"[dim]* {who['name'] or who['id']} {change}[/]")

    async with SwitchboardClient(url, token=token, name=name) as client:
        client.on("message", show)
        client.on("presence", presence)
        client.on("announcement", lambda a: out.print(f"[yellow]! {a['text']}[/]"))
        joined = await client.join(room)
        for message in joined["history"]:
            show(message)
        members = ", ".join(m["name"] or m["id"] for m in joined["members"])
        out.print(f"[dim]* in {room}: {members}[/]")
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.strip():
                show(await client.send(room, line.rstrip("\n")))


@app.command()
def doctor(
    url: Annotated[
        str,
        typer.Argument(
            metavar="URL", envvar="SWITCHBOARD_URL", help="The deployment's URL (the proxy's)."
        ),
    ] = DEFAULT_URL,
    node: Annotated[
        list[str] | None,
        typer.Option("--node", help="A node's own URL: its /readyz and clock (repeatable)."),
    ] = None,
    origin: Annotated[
        list[str] | None,
        typer.Option("--origin", help="A web page origin that must be let in (repeatable)."),
    ] = None,
    sessions: Annotated[int, typer.Option(help="Polling sessions for stickiness.")] = 20,
    slow: Annotated[
        bool, typer.Option("--slow", help="Hold an idle long-poll the full pingInterval.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds for each request.")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a deployment from outside; print what is wrong and how to fix it.

    Health, stickiness, websocket upgrade, CORS, nodes, clocks, proxy timeouts.

    Exit 0 when no check failed, 1 otherwise.
    """
    from .doctor import Options, normalize_url, print_report
    from .doctor import run as run_doctor

    try:
        for given in [url, *(node or [])]:
            normalize_url(given)
    except ValueError as exc:
        _fail(str(exc), code=2)
    options = Options(url, node or [], origin or [], max(sessions, 1), slow=slow, timeout=timeout)
    report = _run(run_doctor(options))
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print_report(report, out)
    raise typer.Exit(0 if report.ok else 1)


CLIENT_FILES = ("switchboard.js", "switchboard.d.ts")
VENDOR_FILE = "socket.io.esm.min.js"


CLIENT_JS_HELP = (
    "Write /switchboard.js as an npm package for bundlers (Vite, webpack, esbuild).\n\n"
    "DIR gets switchboard.js, its types (switchboard.d.ts), the socket.io-client copy it "
    "imports (vendor/) and a package.json named switchboard-client, versioned as this server. "
    'Then `npm install ./DIR` in your app and import from "switchboard-client".\n\n'
    "A bundled module cannot tell where the server is: call configure({ url }) before "
    "anything else, and let the app's origin in with `serve --cors-origins`."
)


@app.command("client-js", help=CLIENT_JS_HELP)
def client_js(
    directory: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="Where to write the package (created when missing)."),
    ],
) -> None:
    try:
        written = write_client_package(directory)
    except OSError as exc:  # the vendor copy is missing, or DIR cannot be written
        _fail(str(exc))
    for path in written:
        err.print(f"wrote {path}", highlight=False)
    err.print(
        f"next: npm install {_shell_path(directory)}, then in the app "
        'import { configure } from "switchboard-client" and call '
        'configure({ url: "https://your-switchboard" }) before anything else',
        highlight=False,
    )


def write_client_package(directory: Path, static: Path = STATIC) -> list[Path]:
    """Copy the browser module, its types and socket.io-client into `directory` with a
    package.json; return the files written. Raises FileNotFoundError naming what is missing."""
    vendor = static / "vendor" / VENDOR_FILE
    if not vendor.is_file():
        raise FileNotFoundError(
            f"{vendor} is missing: socket.io-client is copied from npm by `make static` "
            "(run it in the source tree, or install a built wheel)"
        )
    (directory / "vendor").mkdir(parents=True, exist_ok=True)
    written = [shutil.copyfile(static / name, directory / name) for name in CLIENT_FILES]
    written.append(shutil.copyfile(vendor, directory / "vendor" / VENDOR_FILE))
    source_map = vendor.with_name(VENDOR_FILE + ".map")  # its sourceMappingURL points here
    if source_map.is_file():
        written.append(shutil.copyfile(source_map, directory / "vendor" / source_map.name))
    package = {
        "name": "switchboard-client",
        "version": __version__,
        "description": f"Switchboard {__version__}'s browser module with its socket.io-client, "
        "written by `switchboard client-js`.",
        "type": "module",
        "main": "./switchboard.js",
        "types": "./switchboard.d.ts",
        "exports": {
            ".": {"types": "./switchboard.d.ts", "default": "./switchboard.js"},
            "./package.json": "./package.json",
        },
        "license": "MIT",
    }
    manifest = directory / "package.json"
    manifest.write_text(json.dumps(package, indent=2) + "\n")
    return [*written, manifest]


def _shell_path(path: Path) -> str:
    """`./dir` for a relative path, so npm reads it as a folder and not a package name."""
    text = str(path)
    return text if path.is_absolute() or text.startswith(".") else f"./{text}"


def _run(work: Coroutine[Any, Any, Any]) -> Any:
    try:
        return asyncio.run(work)
    except SwitchboardError as exc:
        _fail(f"{exc.code}: {exc.message}", code=EXIT_ERROR)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _call(request: Any) -> Any:
    try:
        return request()
    except SwitchboardError as exc:
        _fail(f"{exc.code}: {exc.message}")


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def main() -> None:
    app()
