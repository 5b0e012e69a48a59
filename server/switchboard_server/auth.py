"""Admin bearer token and client JWTs (HS256) with glob grants on jobs and rooms."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Literal

import jwt

from .settings import Settings

if TYPE_CHECKING:
    from .authhook import AuthWebhook

ALGORITHM = "HS256"
ALL = ("*",)


class Unauthorized(Exception):
    """Refused at connect; socket.io-client sees connect_error 'unauthorized'."""


@dataclass(frozen=True)
class Identity:
    """Who is on the other end of a connection and what they may see."""

    sub: str | None
    name: str | None
    jobs: tuple[str, ...] = ALL  # anonymous clients and the admin token: everything
    rooms: tuple[str, ...] = ALL
    cancel: tuple[str, ...] = ()  # jobs it may ask to cancel: the admin token, all
    tags: tuple[str, ...] = ALL  # tags whose jobs it may follow (subscribe {tag})
    exp: float | None = None  # client tokens: when it expires, when and as what it was issued
    iat: float | None = None
    jti: str | None = None
    source: Literal["anonymous", "admin", "token", "webhook"] = "anonymous"

    def may_watch(self, job_id: str) -> bool:
        return any(fnmatchcase(job_id, pattern) for pattern in self.jobs)

    def may_watch_all(self) -> bool:
        """'*' subscriptions see every job, so they need a grant that covers every job."""
        return "*" in self.jobs

    def may_join(self, room: str) -> bool:
        return any(fnmatchcase(room, pattern) for pattern in self.rooms)

    def may_cancel(self, job_id: str) -> bool:
        return any(fnmatchcase(job_id, pattern) for pattern in self.cancel)

    def may_follow(self, tag: str) -> bool:
        """Every job with this tag, whatever its id: a `tags` grant, or every job."""
        return self.may_watch_all() or any(fnmatchcase(tag, pattern) for pattern in self.tags)

    def grants(self) -> dict[str, list[str]]:
        return {"jobs": list(self.jobs), "rooms": list(self.rooms), "cancel": list(self.cancel),
                "tags": list(self.tags)}  # fmt: skip


class Auth:
    def __init__(self, settings: Settings) -> None:
        given = settings.admin_token.get_secret_value() if settings.admin_token else ""
        self.admin_token_generated = not given
        self.admin_token = given or secrets.token_urlsafe(32)
        self.client_secret = (
            settings.client_secret.get_secret_value() if settings.client_secret else None
        )
        # Set by create_app: whether a revocation covers a client token (tokens.py).
        self.is_revoked: Callable[[Identity], bool] = lambda identity: False
        self.hook: AuthWebhook | None = None  # set by create_app with --auth-webhook

    @property
    def mode(self) -> str:
        modes = ["client tokens (JWT HS256)"] if self.client_secret else []
        if self.hook is not None:
            modes.append(f"auth webhook {self.hook.url}")
        return " and ".join(modes) or "anonymous clients"

    def is_admin(self, token: str) -> bool:
        # surrogatepass: a header or payload may carry lone surrogates; never raise here.
        given = token.encode("utf-8", "surrogatepass")
        return hmac.compare_digest(given, self.admin_token.encode())

    def is_admin_ui_login(self, login: object) -> bool:
        """The Admin UI's {"username": "admin", "password": <admin token>}, in constant time."""
        if not isinstance(login, dict):
            return False
        user, password = login.get("username"), login.get("password")
        if not isinstance(user, str) or not isinstance(password, str):
            return False
        return hmac.compare_digest(user.encode(), b"admin") & self.is_admin(password)

    def is_client_token(self, token: str) -> bool:
        try:
            self.decode(token)
        except Unauthorized:
            return False
        return True

    def identify(self, auth: object) -> Identity:
        """The identity behind a Socket.IO `auth` object; raises Unauthorized."""
        fields = auth if isinstance(auth, dict) else {}
        name = fields.get("name")
        name = name if isinstance(name, str) and 0 < len(name) <= 64 else None
        token = fields.get("token")
        if isinstance(token, str) and token and self.is_admin(token):
            return Identity(sub="admin", name=name or "admin", cancel=ALL, source="admin")
        if self.client_secret is None:
            return Identity(sub=None, name=name)
        if not isinstance(token, str) or not token:
            raise Unauthorized("no token")
        return self.decode(token)

    async def authenticate(self, auth: object, described: dict[str, Any]) -> Identity:
        """Like identify; with an auth webhook, a connection without the admin token or a
        valid client token is the webhook's to judge, told `described` (authhook.describe,
        with the auth payload). Raises Unauthorized or HookUnavailable."""
        if self.hook is None:
            return self.identify(auth)
        try:
            return self.identify(auth) if self.client_secret is not None else self._admin(auth)
        except Unauthorized:
            return await self.hook.identify(described)

    def _admin(self, auth: object) -> Identity:
        identity = self.identify(auth)
        if identity.source != "admin":
            raise Unauthorized("not the admin token")
        return identity

    def decode(self, token: str) -> Identity:
        if self.client_secret is None:
            raise Unauthorized("client tokens are not enabled")
        try:
            claims = jwt.decode(
                token,
                self.client_secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "exp"]},
            )
        except (jwt.PyJWTError, ValueError) as exc:  # ValueError: undecodable text
            raise Unauthorized(str(exc)) from None
        sub, name, jti, iat = (claims.get(key) for key in ("sub", "name", "jti", "iat"))
        if (
            not isinstance(sub, str)
            or not (name is None or isinstance(name, str))
            or not (jti is None or isinstance(jti, str))
            or not (iat is None or isinstance(iat, int | float))
        ):
            raise Unauthorized("malformed claims")
        identity = Identity(
            sub=sub,
            name=name,
            jobs=_patterns(claims.get("jobs")),
            rooms=_patterns(claims.get("rooms")),
            cancel=_patterns(claims.get("cancel")),
            tags=_patterns(claims.get("tags")),
            exp=float(claims["exp"]),
            iat=iat,
            jti=jti,
            source="token",
        )
        if self.is_revoked(identity):
            raise Unauthorized("token revoked")
        return identity

    def mint(
        self,
        sub: str,
        *,
        name: str | None = None,
        jobs: list[str] | None = None,
        rooms: list[str] | None = None,
        cancel: list[str] | None = None,
        tags: list[str] | None = None,
        ttl: int = 3600,
    ) -> tuple[str, str, str]:
        """A signed client token, its expiry (RFC 3339) and its id (`jti`, for revocation)."""
        if self.client_secret is None:
            raise ValueError("no client secret is set")
        now, jti = time.time(), secrets.token_urlsafe(12)
        expires = int(now) + ttl
        claims: dict[str, object] = {"sub": sub, "exp": expires, "iat": now, "jti": jti}
        given = {"name": name, "jobs": jobs, "rooms": rooms, "cancel": cancel, "tags": tags}
        for key, value in given.items():
            if value is not None:
                claims[key] = value
        token = jwt.encode(claims, self.client_secret, algorithm=ALGORITHM)
        expires_at = datetime.fromtimestamp(expires, UTC).isoformat(timespec="milliseconds")
        return token, expires_at.replace("+00:00", "Z"), jti


def _patterns(value: object) -> tuple[str, ...]:
    """A grant list; a missing claim grants nothing ("*" must be granted explicitly)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise Unauthorized("malformed grants")
    return tuple(value)
