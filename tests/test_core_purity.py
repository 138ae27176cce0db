"""The core does no I/O: `statemachine/` imports nothing that touches files or sockets."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "statemachine"
FORBIDDEN_MODULES = {
    "paramiko", "asyncssh", "sqlite3", "sqlite_utils", "click", "socket", "os", "pathlib",
    "io", "shutil", "subprocess", "tempfile", "cloudshare_p2p", "select", "asyncio", "glob",
}
FORBIDDEN_CALLS = {"open", "input", "print", "exec", "eval", "__import__"}


def core_files():
    files = sorted(CORE.glob("*.py"))
    assert files, "statemachine/ has no modules"
    return files


def test_core_imports_nothing_that_does_io():
    offenders = []
    for path in core_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
    assert offenders == []


def test_core_calls_no_io_builtins():
    offenders = []
    for path in core_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in FORBIDDEN_CALLS:
                offenders.append(f"{path.name}:{node.lineno} {node.func.id}()")
    assert offenders == []


def test_core_reads_time_only_through_the_injected_clock():
    uses = []
    for path in core_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "time":
                uses.append((path.name, node.attr))
    assert uses == [("lease.py", "monotonic")]
