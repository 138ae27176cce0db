"""A background thread that dies (paramiko's prefetch thread when the line is cut) never prints
a traceback on the terminal: the details go to the home's error log."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_dying_background_thread_prints_no_traceback(tmp_path):
    home = tmp_path / "home"
    script = textwrap.dedent(f"""
        import threading
        from cloudshare_p2p.cli import main
        main(["--home", {str(home)!r}, "whoami"], standalone_mode=False)  # as every command starts
        def prefetch():
            raise OSError("Socket is closed")
        t = threading.Thread(target=prefetch, name="prefetch")
        t.start()
        t.join()
        print("main thread goes on")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Socket is closed" not in done.stderr, done.stderr
    assert "main thread goes on" in done.stdout
    log = (home / "logs" / "cloudshare-errors.log").read_text()
    assert "OSError: Socket is closed" in log and "thread prefetch" in log
