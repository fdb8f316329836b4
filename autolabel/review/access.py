"""Who may reach the review server, and what it refuses: passwords (from an environment
variable or a file, so they stay out of `ps`), slowed repeated failures, a warning when the
server listens beyond this machine without a password, and no uploads at all."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
from pathlib import Path

from autolabel.types import UsageError

AUTH_ENV = "AUTOLABEL_AUTH"


def parse_credentials(text: str, where: str) -> dict[str, str]:
    """`user:password` pairs, one per line or comma-separated (blank lines and # comments skipped)."""
    users: dict[str, str] = {}
    for part in text.replace(",", "\n").splitlines():
        part = part.strip()
        if not part or part.startswith("#"):
            continue
        user, sep, password = part.partition(":")
        if not sep or not user or not password:
            raise UsageError(f"{where}: expected user:password")
        users[user] = password
    if not users:
        raise UsageError(f"{where}: no user:password found")
    return users


def credentials(auth: str | None = None, auth_file: Path | None = None, env: dict | None = None) -> dict[str, str] | None:
    """The accounts from --auth, --auth-file or $AUTOLABEL_AUTH (in that order); None if none is given."""
    env = os.environ if env is None else env
    if auth:
        return parse_credentials(auth, "--auth")
    if auth_file is not None:
        try:
            return parse_credentials(Path(auth_file).read_text(), f"--auth-file {auth_file}")
        except OSError as e:
            raise UsageError(f"--auth-file {auth_file}: {e.strerror or e}") from None
    if env.get(AUTH_ENV):
        return parse_credentials(env[AUTH_ENV], f"${AUTH_ENV}")
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, has_auth: bool) -> str | None:
    """A warning when the server is reachable from other machines without a password."""
    if has_auth or is_loopback(host):
        return None
    return (f"listening on {host or 'all interfaces'} without --auth: anyone who can reach this machine can read the "
            f"labelled images and change the corrections (give --auth-file or ${AUTH_ENV})")


class SlowAuth:
    """Gradio's auth callable: checks user:password in constant time and slows repeated failures.

    Checks run one at a time; after each failure in a row the next check waits longer
    (base, 2 x base, 4 x base, ... up to cap seconds), so guessing a password through the
    login form costs minutes per dozen tries instead of 200 tries a second. A success resets it.
    """

    def __init__(self, users: dict[str, str], base: float = 0.5, cap: float = 10.0, sleep=asyncio.sleep):
        self.users, self.base, self.cap, self.sleep = dict(users), base, cap, sleep
        self.failures = 0
        self._lock: asyncio.Lock | None = None

    def delay(self) -> float:
        return 0.0 if not self.failures else min(self.cap, self.base * 2 ** (self.failures - 1))

    async def check(self, username: str, password: str) -> bool:
        """The callable for launch(auth=...): a coroutine function, which Gradio awaits."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.failures:
                await self.sleep(self.delay())
            want = self.users.get(username, "")
            ok = bool(want) and hmac.compare_digest(password.encode(), want.encode())
            self.failures = 0 if ok else self.failures + 1
            return ok


class RefuseUploads:
    """ASGI middleware: the review app takes no files, so Gradio's upload routes answer 403."""

    REFUSED = frozenset({"upload", "upload_progress"})

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path", "").rstrip("/").rsplit("/", 1)[-1] in self.REFUSED:
            body = b'{"detail": "uploads are refused by autolabel review"}'
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
