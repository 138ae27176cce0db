"""Host keys: the tool's own known_hosts file (never ~/.ssh/known_hosts; paramiko's host
key policies are never used), fingerprints, reading a host's key without logging in, and
the pin-or-refuse check made on every connection."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
from pathlib import Path

import paramiko

from cloudshare_p2p import errors

from ..i18n import _
from ..localfiles import atomic_write
from .endpoint import DEFAULT_TIMEOUTS, Endpoint, Timeouts
from .network import open_transport


def fingerprint(key: paramiko.PKey) -> str:
    """`SHA256:<unpadded base64>` like `ssh-keygen -l`."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _normalize_fingerprint(text: str) -> str:
    text = text.strip()
    if not text.upper().startswith("SHA256:"):
        text = "SHA256:" + text
    return "SHA256:" + text[7:].rstrip("=")


class KnownHosts:
    """The tool's own known_hosts file (OpenSSH format), never ~/.ssh/known_hosts."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _entries(self) -> list[tuple[str, str, str]]:
        """(hostport, key_type, base64 blob) for each usable line."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        entries = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 3 and not fields[0].startswith("#"):
                entries.append((fields[0], fields[1], fields[2]))
        return entries

    def lookup(self, hostport: str) -> paramiko.PKey | None:
        """The pinned key of `hostport`, or None."""
        for names, key_type, blob in self._entries():
            if hostport in names.split(","):
                with contextlib.suppress(paramiko.SSHException, binascii.Error, ValueError):
                    return paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))
        return None

    def pin(self, hostport: str, key: paramiko.PKey) -> None:
        """Pin `key` for `hostport` (replacing any older pin); atomic write, mode 0600."""
        kept = [e for e in self._entries() if hostport not in e[0].split(",")]
        kept.append((hostport, key.get_name(), key.get_base64()))
        self._write(kept)

    def remove(self, hostport: str) -> bool:
        """Forget `hostport`; True if it was pinned."""
        entries = self._entries()
        kept = [e for e in entries if hostport not in e[0].split(",")]
        if len(kept) == len(entries):
            return False
        self._write(kept)
        return True

    def fingerprints(self) -> dict[str, str]:
        """hostport -> "SHA256:..." of every pinned key."""
        result: dict[str, str] = {}
        for names, _kind, blob in self._entries():
            with contextlib.suppress(binascii.Error, ValueError):
                digest = hashlib.sha256(base64.b64decode(blob)).digest()
                fp = "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
                for name in names.split(","):
                    result.setdefault(name, fp)
        return result

    def _write(self, entries: list[tuple[str, str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = "".join(f"{h} {t} {b}\n" for h, t, b in entries)
        atomic_write(self.path, text.encode("utf-8"), 0o600)



def probe_host_key(endpoint: Endpoint, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> tuple[str, str]:
    """Read the host key without logging in: (key_type, fingerprint)."""
    transport = open_transport(endpoint, timeouts)
    try:
        key = transport.get_remote_server_key()
        return key.get_name(), fingerprint(key)
    finally:
        transport.close()


class HostKeyMismatch(errors.HostKeyChanged):
    """The host's key is not the one whose fingerprint the user was given (exit 8)."""

    def __init__(self, host: str, given: str, got: str) -> None:
        self.host, self.expected, self.got = host, given, got
        errors.CloudShareError.__init__(
            self,
            _("the host key of {host} does not match the fingerprint you were given ({given}); "
              "this may be an attack or a mistake").format(host=host, given=given),
            hint=_("do not connect: ask the firm for the host key fingerprint again (by phone or in "
            "person) and check the address in the URL"),
        )


def _fingerprint_matches(given: str, key: paramiko.PKey) -> bool:
    """`given` as `SHA256:<base64>` (or bare base64) or `MD5:aa:bb:…` names `key`."""
    text = given.strip()
    if text.upper().startswith("MD5:"):
        md5 = hashlib.md5(key.asbytes(), usedforsecurity=False).hexdigest()
        wanted = text[4:].replace(":", "").lower()
        return len(wanted) == 32 and hmac.compare_digest(wanted, md5)
    return hmac.compare_digest(_normalize_fingerprint(text), fingerprint(key))


def check_host_key(
    transport: paramiko.Transport,
    endpoint: Endpoint,
    known_hosts: KnownHosts,
    accept_fingerprint: str | None,
) -> None:
    """Pinned and different: HostKeyChanged, always. A fingerprint given that does not match
    the key: HostKeyMismatch. Pinned and equal: fine. Not pinned: pin it if the caller
    accepted exactly this key, else HostKeyUnknown."""
    hostport = endpoint.hostport()
    key = transport.get_remote_server_key()
    got = fingerprint(key)
    pinned = known_hosts.lookup(hostport)
    if pinned is not None and (pinned.get_name() != key.get_name() or pinned.asbytes() != key.asbytes()):
        raise errors.HostKeyChanged(hostport, fingerprint(pinned), got)
    if accept_fingerprint and not _fingerprint_matches(accept_fingerprint, key):
        raise HostKeyMismatch(hostport, accept_fingerprint.strip()[:100], got)
    if pinned is not None:
        return
    if accept_fingerprint:
        known_hosts.pin(hostport, key)
        return
    raise errors.HostKeyUnknown(hostport, got, key.get_name())
