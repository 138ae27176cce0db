"""The stage `cloudshare demo` plays on: the narrator, the commands it runs and checks, the host.

`Demo` prints the story, runs the real `cloudshare` command as a subprocess for each step
(checking its exit code and the key words of its output; a surprise raises `DemoFailure`), and
starts and stops the embedded SFTP host on a free 127.0.0.1 port. The story is in demo.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .i18n import _, language, width

COMMAND_TIMEOUT = 60.0  # seconds, for every cloudshare command
HOST_START_TIMEOUT = 10.0
HOST_STOP_TIMEOUT = 10.0
HOST_GRACE = 2.0  # seconds live connections get when the host stops

COMM_ID = "yamada"
SHARE_PASSWORD = "demo share password"
REMOTE = "office"
AREA = "yamada-books"
DATASET = "books"

NAMES = {"firm": "Firm (Sato)", "client": "Client (Yamada Trading)", "client2": "Client laptop"}


class DemoFailure(Exception):
    """A step did not behave as expected: the story stops here."""


@dataclass
class Result:
    argv: list[str]
    code: int
    output: str  # stdout and stderr, interleaved as written


@dataclass
class Demo:
    base: Path
    exe: list[str]
    out: TextIO = field(default_factory=lambda: sys.stdout)
    host_proc: subprocess.Popen | None = None
    host_log: Path | None = None
    port: int = 0
    fingerprint: str = ""
    checks: int = 0
    commands: int = 0

    # --- narration -------------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def header(self, text: str) -> None:
        self.say()
        self.say(f"── {text} " + "─" * max(3, 78 - width(text)))

    def show(self, text: str, prefix: str = "    ") -> None:
        for line in text.rstrip("\n").splitlines():
            self.say(f"{prefix}{line}")

    def ok(self, text: str) -> None:
        self.checks += 1
        self.say(f"  ✓ {text}")

    # --- running commands --------------------------------------------------------------------------

    def env(self, who: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("CLOUDSHARE_")}  # nothing of the caller's own setup leaks in
        env["CLOUDSHARE_PASSWORD"] = SHARE_PASSWORD
        env["CLOUDSHARE_LANG"] = language()  # the commands speak the narration's language
        env["PYTHONIOENCODING"] = "utf-8"
        env["PYTHONUNBUFFERED"] = "1"
        if who is not None:
            env["CLOUDSHARE_NAME"] = NAMES[who]
        return env

    def cloudshare(self, who: str | None, *args: str, expect: int = 0, contains: Sequence[str] = (),
                   extra_env: dict[str, str] | None = None) -> Result:
        """Run `cloudshare [--home WHO] ARGS` in the demo folder, show it, check it."""
        argv = (["--home", who] if who else []) + list(args)
        shown = " ".join(_quote(a) for a in ["cloudshare", *argv])
        env_note = "".join(f"{k}=*** " if "PASSWORD" in k else f"{k}={_quote(v)} "
                           for k, v in (extra_env or {}).items())
        self.say(f"$ {env_note}{shown}")
        env = self.env(who)
        env.update(extra_env or {})
        self.commands += 1
        try:
            # stdout and stderr into one pipe (both unbuffered): shown in the order they were written
            proc = subprocess.run(self.exe + argv, cwd=self.base, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            self.show(_text(exc.stdout))
            raise DemoFailure(_("`{shown}` did not finish within {seconds:.0f} s").format(
                shown=shown, seconds=COMMAND_TIMEOUT)) from None
        res = Result(argv, proc.returncode, _text(proc.stdout))
        self.show(res.output)
        if res.code != expect:
            raise DemoFailure(_("`{shown}` exited {code}, expected {expect}").format(
                shown=shown, code=res.code, expect=expect))
        missing = [c for c in contains if c.lower() not in res.output.lower() and self.checkable(c)]
        if missing:
            raise DemoFailure(_("`{shown}` exited {code} as expected, but its output lacks ").format(
                shown=shown, code=res.code)
                              + ", ".join(repr(m) for m in missing))
        if expect:
            self.say(_("    (exit {code}, as expected)").format(code=res.code))
        return res

    def checkable(self, text: str) -> bool:
        """Is `text` expected in the output in every language? English phrases are checked only
        when the commands speak English; names, versions and fingerprints always."""
        if language() == "en":
            return True
        neutral = {DATASET, REMOTE, AREA, f"{REMOTE}/{AREA}", self.fingerprint, *NAMES.values()}
        return text in neutral or bool(re.fullmatch(r"v\d+", text))

    def check(self, condition: bool, good: str, bad: str) -> None:
        if not condition:
            raise DemoFailure(bad)
        self.ok(good)

    # --- the embedded host -------------------------------------------------------------------------

    def start_host(self) -> None:
        last = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind: retry
            port = _free_port()
            self.host_log = self.base / "host.log"
            argv = ["host", "serve", "host", "--bind", "127.0.0.1", "--port", str(port),
                    "--grace", str(HOST_GRACE)]
            self.say(_("$ cloudshare {args} &     (output in host.log)").format(args=" ".join(argv)))
            with open(self.host_log, "ab") as log:
                self.host_proc = subprocess.Popen(self.exe + argv, cwd=self.base, env=self.env(None),
                                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            deadline = time.monotonic() + HOST_START_TIMEOUT
            while time.monotonic() < deadline and self.host_proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        self.port = port
                        self.ok(_("the host listens on 127.0.0.1:{port} (pid {pid})").format(
                            port=port, pid=self.host_proc.pid))
                        return
                except OSError:
                    time.sleep(0.05)
            if self.host_proc.poll() is None:
                self.stop_host(quiet=True)
                raise DemoFailure(_("the host did not listen within {seconds:.0f} s:\n").format(
                    seconds=HOST_START_TIMEOUT)
                                  + self.host_log.read_text(errors="replace")[-2000:])
            last = self.host_log.read_text(errors="replace")[-2000:]
            self.host_proc = None
        raise DemoFailure(_("the host did not start:\n{last}").format(last=last))

    def stop_host(self, quiet: bool = False) -> int | None:
        """SIGTERM, bounded wait, kill if it hangs; returns its exit status (None if not running)."""
        proc, self.host_proc = self.host_proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            if not quiet:
                self.say(_("$ kill -TERM {pid}     (the host's pid)").format(pid=proc.pid))
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=HOST_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
                return -9
        return proc.returncode


def cloudshare_command() -> list[str]:
    """The `cloudshare` executable next to this interpreter, else the same CLI through it."""
    exe = shutil.which("cloudshare", path=str(Path(sys.executable).parent))
    if exe:
        return [exe]
    return [sys.executable, "-c", "from cloudshare_p2p.cli import main; main()"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


def _quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./:=@,+%" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"
