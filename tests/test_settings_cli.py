"""`switchboard serve` takes its options from Settings: one field, one flag and one variable."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args, get_origin

import pytest
import typer
from pydantic import Field, SecretStr
from pydantic.fields import FieldInfo
from switchboard_server import cli
from switchboard_server.settings import Flag, Settings
from typer.testing import CliRunner

runner = CliRunner()
SECRET = "never-shown-7f3c9a"
WIDE = {"COLUMNS": "250"}  # each option's help on one line


def serve_options() -> dict[str, Any]:
    command = typer.main.get_command(cli.app)
    assert isinstance(command, typer.core.TyperGroup)
    return {param.name: param for param in command.commands["serve"].params}


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """`serve` builds the real Settings (environment included), then stops before serving."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"SWITCHBOARD_{name.upper()}", raising=False)
    built: list[Settings] = []

    def build(**given: Any) -> Settings:
        built.append(Settings(**given))
        raise typer.Exit(0)

    monkeypatch.setattr(cli, "Settings", build)
    return built


def serve(captured: list[Settings], *args: str) -> Settings:
    result = runner.invoke(cli.app, ["serve", *args])
    assert result.exit_code == 0, result.output
    return captured.pop()


def test_every_field_is_a_serve_option_and_every_option_a_field() -> None:
    options = serve_options()
    assert set(options) - {"help"} == set(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        option = options[name]
        assert option.opts == [f"--{name.replace('_', '-')}"]
        assert option.envvar == f"SWITCHBOARD_{name.upper()}"
        assert option.default is None  # so that the environment, then the field, decide
        assert field.description and field.description.removesuffix(".") in option.help


def test_help_shows_defaults_choices_and_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    options = serve_options()
    assert "[default: 8001]." in options["port"].help
    assert "[default: 10]." in options["redis_pool_timeout"].help  # 10.0 as people write it
    assert "[default: same origin]." in options["cors_origins"].help  # Flag(shown_default=)
    assert "[default: off]." in options["admin_ui"].help
    assert "(debug, info, warning or error) \\[default: info]." in options["log_level"].help
    assert options["admin_ui"].secondary_opts == ["--no-admin-ui"]
    for name in ("admin_token", "client_secret"):
        assert "default" not in options[name].help
    monkeypatch.setenv("SWITCHBOARD_ADMIN_TOKEN", SECRET)
    monkeypatch.setenv("SWITCHBOARD_CLIENT_SECRET", SECRET)
    shown = runner.invoke(cli.app, ["serve", "--help"], env=WIDE)
    assert shown.exit_code == 0
    assert "--admin-token" in shown.output and "SWITCHBOARD_CLIENT_SECRET" in shown.output
    assert "--log-format" in shown.output and "[default: console]" in shown.output
    assert SECRET not in shown.output


def test_flag_beats_variable_beats_default(
    captured: list[Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    default = serve(captured)
    assert (default.port, default.cors_origins, default.admin_ui) == (8001, [], False)
    assert default.admin_token is None and default.log_level == "info"

    monkeypatch.setenv("SWITCHBOARD_PORT", "9000")
    monkeypatch.setenv("SWITCHBOARD_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("SWITCHBOARD_ADMIN_UI", "true")
    monkeypatch.setenv("SWITCHBOARD_ADMIN_TOKEN", SECRET)
    monkeypatch.setenv("SWITCHBOARD_LOG_LEVEL", "warning")
    from_env = serve(captured)
    assert from_env.port == 9000 and from_env.admin_ui is True
    assert from_env.cors_origins == ["https://a.example", "https://b.example"]
    assert from_env.admin_token is not None and from_env.admin_token.get_secret_value() == SECRET
    assert SECRET not in repr(from_env)
    assert from_env.log_level == "warning" and from_env.store == "sqlite:///switchboard.db"

    flags = serve(
        captured, "--port", "9100", "--cors-origins", "*", "--no-admin-ui",
        "--admin-token", "from-flag", "--log-level", "debug",
    )  # fmt: skip
    assert (flags.port, flags.cors_origins, flags.admin_ui) == (9100, ["*"], False)
    assert flags.admin_token is not None and flags.admin_token.get_secret_value() == "from-flag"
    assert flags.log_level == "debug"


def sample(name: str, field: FieldInfo) -> tuple[list[str], Any]:
    """Command-line arguments that set the field to something else than its default."""
    flag = f"--{name.replace('_', '-')}"
    kind = field.annotation
    if type(None) in get_args(kind):  # X | None
        [kind] = [k for k in get_args(kind) if k is not type(None)]
    default = field.get_default(call_default_factory=True)
    if field.examples:  # a field that checks its values gives a valid one, as typed
        given = str(field.examples[0])
        return [flag, given], getattr(Settings(**{name: given}), name)
    if kind is bool:
        return [flag if not default else f"--no-{name.replace('_', '-')}"], not default
    if get_origin(kind) is Literal:
        other = next(choice for choice in get_args(kind) if choice != default)
        return [flag, other], other
    if kind is int or kind is float:
        return [flag, str(default + 1)], default + 1
    if get_origin(kind) is list:
        return [flag, "a, b"], ["a", "b"]
    assert kind in (str, SecretStr), f"no sample for {name}: {kind}"
    value = f"http://sample-{name.replace('_', '-')}.test/"  # a URL: some fields take only URLs
    return [flag, value], value


def test_every_flag_reaches_its_own_field(captured: list[Settings]) -> None:
    argv: list[str] = []
    expected: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        args, expected[name] = sample(name, field)
        argv += args
    settings = serve(captured, *argv)
    for name, value in expected.items():
        got = getattr(settings, name)
        assert (got.get_secret_value() if isinstance(got, SecretStr) else got) == value, name


def test_cli_refuses_what_settings_refuse(captured: list[Settings]) -> None:
    assert runner.invoke(cli.app, ["serve", "--log-level", "loud"]).exit_code == 2
    assert runner.invoke(cli.app, ["serve", "--port", "many"]).exit_code == 2
    bad = runner.invoke(cli.app, ["serve", "--port", "99999"])
    assert bad.exit_code == 2 and "bad configuration" in bad.output and not captured


def test_a_new_field_is_a_new_flag_with_no_other_edit(captured: list[Settings]) -> None:
    class More(Settings):
        shard: int = Field(3, ge=1, description="Shards to spread jobs over.")
        region: Annotated[str, Flag(names=("--region", "-r"), metavar="<name>")] = Field(
            "eu", description="Where this node runs."
        )
        mode: Literal["fast", "safe"] = Field("safe", description="Trade-off.")

    seen: list[dict[str, Any]] = []
    app = typer.Typer()

    @app.command()
    @cli._options_from(More)
    def serve(**given: Any) -> None:
        seen.append({name: value for name, value in given.items() if value is not None})

    shown = runner.invoke(app, ["--help"], env=WIDE)
    assert shown.exit_code == 0
    for text in (
        "--shard", "SWITCHBOARD_SHARD", "Shards to spread jobs over [default: 3].",
        "<name>", "Where this node runs [default: eu].",
        "Trade-off (fast or safe) [default: safe].", "--admin-ui", "--no-admin-ui",
    ):  # fmt: skip
        assert text in shown.output, text
    region = next(p for p in typer.main.get_command(app).params if p.name == "region")
    assert region.opts == ["--region", "-r"] and region.envvar == "SWITCHBOARD_REGION"
    result = runner.invoke(
        app, ["--shard", "5", "-r", "us", "--mode", "fast", "--port", "1"],
        env={"SWITCHBOARD_STORE": "memory://"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen == [{"shard": 5, "region": "us", "mode": "fast", "port": 1, "store": "memory://"}]
