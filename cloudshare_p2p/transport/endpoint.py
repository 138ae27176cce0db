"""Where and how to log in: the `sftp://` URL (Endpoint), the time limits (Timeouts) and
the login means (Credentials). Pure values, no network."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

from ..i18n import _


@dataclass(frozen=True)
class Endpoint:
    """Where a share lives: `sftp://USER@HOST[:PORT][/BASE]`.

    `base` is the folder under which areas live: "" = the login folder, "/abs/path" =
    absolute; "sftp://u@h/~/rel" gives the relative base "rel".
    """

    user: str
    host: str
    port: int = 22
    base: str = ""

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Parse a remote URL; ValueError with a clear message if it is not one."""
        scheme, sep, rest = url.strip().partition("://")
        if not sep or scheme.lower() != "sftp":
            raise ValueError(_("not an sftp:// URL: {url!r} (expected sftp://USER@HOST[:PORT][/BASE])")
                .format(url=url))
        netloc, slash, path = rest.partition("/")
        user, at, hostport = netloc.rpartition("@")
        if not at or not user:
            raise ValueError(_("the URL {url!r} names no user (expected sftp://USER@HOST...)").format(
                url=url))
        host, port = _split_hostport(hostport, url)
        return cls(unquote(user), host, port, _parse_base(slash + path))

    def url(self) -> str:
        """Canonical URL; `Endpoint.parse(e.url()) == e`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == 22 else f":{self.port}"
        if not self.base:
            path = ""
        elif self.base.startswith("/"):
            path = quote(self.base, safe="/")
        else:
            path = "/~/" + quote(self.base, safe="/")
        return f"sftp://{quote(self.user, safe='')}@{host}{port}{path}"

    def hostport(self) -> str:
        """Key for known_hosts: "host" on port 22, else "[host]:port"."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def _split_hostport(hostport: str, url: str) -> tuple[str, int]:
    if hostport.startswith("["):
        host, bracket, tail = hostport[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(_("bad [IPv6] host in {url!r}").format(url=url))
        port_text = tail[1:] if tail else ""
    else:
        host, colon, port_text = hostport.partition(":")
        if ":" in port_text:
            raise ValueError(_("put an IPv6 address in brackets: {url!r}").format(url=url))
        port_text = port_text or colon  # "host:" is a bad port, not port 22
    if not host:
        raise ValueError(_("the URL {url!r} names no host").format(url=url))
    if not port_text:
        return host, 22
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(_("bad port {port_text!r} in {url!r}").format(port_text=port_text, url=url))
    return host, int(port_text)


def _parse_base(path: str) -> str:
    path = unquote(path)
    if path in ("", "/"):
        return "" if path == "" else "/"
    if path == "/~" or path.startswith("/~/"):
        return path[3:].strip("/")
    return "/" + path.strip("/")


# --- timeouts and credentials ------------------------------------------------


def _stall_default() -> float:
    """`CLOUDSHARE_STALL_SECONDS` (a slow office line may want more), else 60 s."""
    try:
        value = float(os.environ.get("CLOUDSHARE_STALL_SECONDS", "60"))
    except ValueError:
        return 60.0
    return value if 1.0 <= value <= 3600.0 else 60.0


@dataclass(frozen=True)
class Timeouts:
    """All in seconds. `resolve` bounds the name lookup, `connect` the TCP connect (all
    addresses together), `channel` one SFTP request, `transfer` one whole transfer, `stall`
    a transfer during which nothing moves (a silent network)."""

    resolve: float = 5.0
    connect: float = 5.0
    banner: float = 15.0
    auth: float = 20.0
    channel: float = 30.0
    transfer: float = 900.0
    stall: float = field(default_factory=_stall_default)


DEFAULT_TIMEOUTS = Timeouts()  # the limits when a caller names none


@dataclass
class Credentials:
    """How to log in. `password` is a provider, called only when a password is needed."""

    identity: Path | None = None
    password: Callable[[], str | None] | None = field(default=None, repr=False)
    use_agent: bool = True


def remote_path(base: str, *parts: str) -> str:
    """Join `base` with `parts` using "/" (base "" -> relative path); no I/O."""
    pieces = [p.strip("/") for p in parts if p.strip("/")]
    if not base:
        return "/".join(pieces)
    return "/".join([base.rstrip("/")] + pieces) if pieces else base
