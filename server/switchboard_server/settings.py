"""One Settings object: every option is a `switchboard serve` flag and a SWITCHBOARD_* variable."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8001, ge=0, le=65535)
    store: str = "sqlite:///switchboard.db"
    redis_prefix: str = Field("switchboard:", description="key and channel prefix in Redis")
    # Connections to Redis for the store, per process; a burst waits up to the timeout.
    redis_pool_size: int = Field(50, ge=1)
    redis_pool_timeout: float = Field(10.0, gt=0)
    # Replicas that must acknowledge an update (Redis WAIT) before it is answered.
    redis_replicas: int = Field(0, ge=0)
    admin_token: SecretStr | None = None
    client_secret: SecretStr | None = None
    # Empty means same-origin only; "*" allows every origin.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ping_interval: float = Field(25.0, gt=0)
    ping_timeout: float = Field(20.0, gt=0)
    history: int = Field(1000, ge=1)
    # Log lines kept per job: the oldest go past either bound (the newest line always stays).
    log_lines: int = Field(10_000, ge=1)
    log_bytes: int = Field(4 * 1024 * 1024, ge=8 * 1024)  # of text, UTF-8
    retention: float = Field(7 * 24 * 3600.0, gt=0, description="seconds to keep finished jobs")
    rate_per_second: float = Field(20.0, gt=0)
    rate_burst: int = Field(40, ge=1)
    max_subscriptions: int = Field(100, ge=1)
    max_rooms: int = Field(20, ge=1)
    # Rooms one token `sub` may be in across its connections on this process.
    max_rooms_per_identity: int = Field(50, ge=1)
    # Rooms the store keeps (in use, or empty with history); new ones past it are refused.
    max_rooms_total: int = Field(1_000, ge=1)
    max_members_per_room: int = Field(10_000, ge=1)
    room_ttl: float = Field(3600.0, gt=0, description="seconds an empty room keeps its history")
    max_packet_bytes: int = Field(1_000_000, ge=1024)
    # Packets queued for one client that stopped reading before it is dropped.
    max_pending: int = Field(1000, ge=10)
    # Socket.IO Admin UI at /admin-ui/: user "admin", the admin token as password.
    admin_ui: bool = False
    # uvloop when installed ("auto"), or the standard library's loop.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] = "console"

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
