"""One Settings object: every option is a `switchboard serve` flag and a SWITCHBOARD_* variable.

A field is all it takes: `serve` makes its flag from the field (name, type, default) and
its description (the help), with `Flag` metadata where help should say more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


@dataclass(frozen=True)
class Flag:
    """What a field's `serve` flag needs beyond the field itself (Annotated metadata).

    Without it the flag is --field-name (--name/--no-name for a bool) and SWITCHBOARD_NAME,
    takes a value of the field's type (a Literal's choices are listed in the help; a
    SecretStr is text whose default is never shown; a list is one comma-separated value, as
    in the environment, so the field splits strings like cors_origins), and its help is the
    field's description followed by the default."""

    # The default as help shows it when the value alone says too little; "" shows none.
    shown_default: str | None = None
    # Names in place of --field-name, e.g. ("--port", "-p").
    names: tuple[str, ...] = ()
    # The value's placeholder in help, in place of its type.
    metavar: str | None = None


class Settings(BaseSettings):
    # Errors name the setting, never echo its value: some are secrets (a webhook's query).
    model_config = SettingsConfigDict(
        env_prefix="SWITCHBOARD_", extra="ignore", hide_input_in_errors=True
    )

    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8001, ge=0, le=65535, description="Port.")
    store: str = Field(
        "sqlite:///switchboard.db",
        description="memory://, sqlite:///path or redis://host:port/db.",
    )
    redis_prefix: str = Field("switchboard:", description="Key and channel prefix in Redis.")
    # Connections to Redis for the store, per process; a burst waits up to the timeout.
    redis_pool_size: int = Field(50, ge=1, description="Store connections to Redis.")
    redis_pool_timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for a free connection."
    )
    # Replicas that must acknowledge an update (Redis WAIT) before it is answered.
    redis_replicas: int = Field(
        0, ge=0, description="Replicas that must acknowledge an update (WAIT)."
    )
    admin_token: SecretStr | None = Field(
        None, description="Admin token; random and printed once when unset."
    )
    client_secret: SecretStr | None = Field(
        None, description="HS256 secret: clients must then bring a JWT."
    )
    auth_webhook: str | None = Field(
        None, description="URL your back end answers with a connection's grants (see README)."
    )
    auth_webhook_timeout: float = Field(3.0, gt=0, description="Seconds to wait for it.")
    auth_webhook_cache: float = Field(
        30.0, ge=0, description="Seconds an answer that allows is reused."
    )
    auth_webhook_subscribe: bool = Field(
        False, description="Also ask it for every subscribe and join."
    )
    # Empty means same-origin only; "*" allows every origin.
    cors_origins: Annotated[list[str], NoDecode, Flag(shown_default="same origin")] = Field(
        default_factory=list, description="Comma-separated origins, or *."
    )
    ping_interval: float = Field(25.0, gt=0, description="Seconds.")
    ping_timeout: float = Field(20.0, gt=0, description="Seconds.")
    history: int = Field(1000, ge=1, description="Events kept per job.")
    # Log lines kept per job: the oldest go past either bound (the newest line always stays).
    log_lines: int = Field(10_000, ge=1, description="Log lines kept per job.")
    log_bytes: Annotated[int, Flag(shown_default="4194304, 4 MiB")] = Field(
        4 * 1024 * 1024, ge=8 * 1024, description="Bytes of log text kept per job."
    )  # of text, UTF-8
    retention: Annotated[float, Flag(shown_default="604800, 7 days")] = Field(
        7 * 24 * 3600.0, gt=0, description="Seconds to keep finished jobs."
    )
    rate_per_second: float = Field(20.0, gt=0, description="Socket events/s per connection.")
    rate_burst: int = Field(40, ge=1, description="Burst allowance.")
    max_subscriptions: int = Field(100, ge=1, description="Job subscriptions per connection.")
    max_rooms: int = Field(20, ge=1, description="Chat rooms per connection.")
    # Rooms one token `sub` may be in across its connections on this process.
    max_rooms_per_identity: int = Field(
        50, ge=1, description="Rooms per token sub, all connections."
    )
    # Rooms the store keeps (in use, or empty with history); new ones past it are refused.
    max_rooms_total: int = Field(1_000, ge=1, description="Chat rooms the store keeps.")
    max_members_per_room: int = Field(10_000, ge=1, description="Connections in one chat room.")
    room_ttl: float = Field(3600.0, gt=0, description="Seconds an empty room keeps its history.")
    max_packet_bytes: int = Field(1_000_000, ge=1024, description="Largest socket packet.")
    # Packets queued for one client that stopped reading before it is dropped.
    max_pending: int = Field(1000, ge=10, description="Unread packets before a client is dropped.")
    admin_ui: bool = Field(
        False,
        description="Serve the Socket.IO Admin UI at /admin-ui/ (user admin, the admin token).",
    )
    # Webhooks out: every committed job event POSTed to each URL that wants it (webhooks.py).
    webhook: Annotated[list[str], NoDecode, Flag(shown_default="none", metavar="URLS")] = Field(
        default_factory=list,
        description="URLs to POST job events to, separated by spaces; filters after #, e.g."
        " https://app.example/hooks#status=terminal&job=build-*.",
        examples=["https://a.example/hooks http://127.0.0.1:9000/in?token=t#status=failed"],
    )
    webhook_secret: SecretStr | None = Field(
        None, description="Webhook signing secret: whsec_<base64> or any text."
    )
    webhook_timeout: float = Field(10.0, gt=0, description="Seconds for one webhook attempt.")
    webhook_backoff_max: float = Field(
        300.0, gt=0, description="Longest wait between attempts of a webhook (seconds)."
    )
    webhook_max_age: Annotated[float, Flag(shown_default="86400, 24 h")] = Field(
        24 * 3600.0, gt=0, description="Seconds a webhook event is retried before it is dead."
    )
    webhook_concurrency: int = Field(
        8, ge=1, description="Jobs sent at once per webhook, per process."
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="Event loop; auto picks uvloop when installed."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe level logged."
    )
    log_format: Literal["console", "json"] = Field(
        "console", description="Log lines; json is one object per line."
    )

    @field_validator("auth_webhook")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("webhook", mode="before")
    @classmethod
    def _split_webhooks(cls, value: object) -> object:
        from .webhooks import split_webhooks

        return split_webhooks(value) if isinstance(value, str) else value

    @field_validator("webhook")
    @classmethod
    def _check_webhooks(cls, value: list[str]) -> list[str]:
        from .webhooks import check_webhooks

        check_webhooks(value)  # ValueError naming the URL, redacted
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        from .webhooks import signing_key

        if value is not None:
            signing_key(value.get_secret_value())
        return value

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
