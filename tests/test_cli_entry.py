"""The console script ends the process without tearing the interpreter down, but only after
the exit handlers ran and the streams were flushed, and never while a thread still works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ENTRY = "from cloudshare_p2p.cli.entry import run\n"


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_exit_codes_and_piped_output_are_those_of_main(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    listed = _python(ENTRY + "run()", "--home", home, "status", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == json.loads(
        _python("from cloudshare_p2p.cli import main; main()", "--home", home, "status", "--json").stdout)
    missing = _python(ENTRY + "run()", "--home", home, "open", "nothing")
    assert missing.returncode == 1 and "no data set named nothing" in missing.stderr
    assert _python(ENTRY + "run()", "--version").stdout.startswith("cloudshare")


def test_exit_handlers_run_before_the_process_ends(tmp_path: Path) -> None:
    mark = tmp_path / "handled"
    code = f"import atexit, pathlib\natexit.register(pathlib.Path({str(mark)!r}).write_text, 'done')\n"
    assert _python(code + ENTRY + "run()", "--version").returncode == 0
    assert mark.read_text() == "done"


def test_a_thread_still_working_is_waited_for(tmp_path: Path) -> None:
    mark = tmp_path / "thread"
    code = ("import threading, time, pathlib\n"
            f"def work():\n    time.sleep(0.3)\n    pathlib.Path({str(mark)!r}).write_text('finished')\n"
            "threading.Thread(target=work).start()\n")
    assert _python(code + ENTRY + "run()", "--version").returncode == 0
    assert mark.read_text() == "finished"
