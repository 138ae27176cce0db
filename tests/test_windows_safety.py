"""The client's code path is Windows-safe by construction (issue 12, "Windows as the client's desktop").

CI is Linux, so this is proven from the source: every client module is parsed with `ast` and may not
use a POSIX-only module, function or signal unless the use is guarded; and every client module must
import with `fcntl`, `pwd`, `grp` and `termios` unimportable, as on Windows.

Client modules: every module under `cloudshare_p2p/` and `statemachine/`, except

- `cloudshare_p2p/host/`: the embedded SFTP host, POSIX-only by design (`fcntl.flock` on
  accounts.json, SIGTERM/SIGINT loop handlers; docs/hosting.md). A Windows desktop never runs it.
- `cloudshare_p2p/hostcli.py`: `cloudshare host ...`, the host's commands; they only drive host/.
  It IS imported by the CLI (cli/root.py) at module level, so it still takes part in the import
  test (transitively and by name): loading it must work on Windows even though running its commands need not.
- `cloudshare_p2p/demo_stage.py`: `cloudshare demo` starts the embedded host (`cloudshare host serve`)
  as a subprocess and stops it with SIGTERM, so it can run only where the host runs. It is
  imported lazily inside the `demo` command and takes part in the import test too.

host/ is left out of the import test as well (see NOT_IMPORTED). hostcli.py and demo_stage.py are not
scanned because they may become POSIX-only; today they would pass the scan.

Forbidden unless guarded:

- imports of `fcntl`, `pwd`, `grp`, `termios`, `resource`, `posix` (also `from os import fork` etc.);
- `os.fork`, `os.getuid`, `os.geteuid`, `os.getgid`, `os.setsid`, `os.killpg`, `os.getpgid`,
  `os.chown`, `os.mkfifo`, `os.statvfs`, `os.sync`, `os.pwrite`/`pread`/`pwritev`/`preadv`,
  `os.posix_fallocate`/`posix_fadvise`, `signal.alarm`, `signal.setitimer` and
  `signal.SIGKILL/SIGSTOP/SIGCONT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2` (flagged as references, called or not);
- `os.kill`: it exists on Windows but means TerminateProcess (and signal 0 is CTRL_C_EVENT), so a
  `hasattr`/`getattr`/`try` does not make it safe; only an `os.name`/`sys.platform`/`platform.system()`
  test does.

Guarded means: inside (either branch of) an `if`/conditional expression whose test mentions
`os.name`, `sys.platform`, `platform.system()`, `hasattr(os|signal, ...)` or `getattr(...)`; after
such an `if` in the same block whose body always leaves it (`return`/`raise`/`continue`/`break`);
an import inside a `try` that catches ImportError/ModuleNotFoundError/AttributeError/OSError; an
attribute inside a `try` that catches AttributeError. One step beyond the brief, to avoid a false
alarm on a real pattern: a module-private function (`_name`) whose every reference in its module is
a guarded call counts as guarded (snapshot/leftovers.py's _pid_alive, called only under `os.name != "nt"`).

Local paths joined by hand: only the unambiguous form is flagged, an explicit conversion of a path
to text joined with "/" (`str(p) + "/..."`, `os.fspath(p) + "/"`, `f"{str(p)}/..."`), in the modules
that handle local paths. The general `f"{a}/{b}"`/`x + "/"` form was dropped: in those modules it
builds manifest names (snapshot/, "/" by the area format) and a "remote/area" label (cli/), which
cannot be told apart from a local path in the syntax tree.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLIENT_PACKAGES = ("cloudshare_p2p", "statemachine")
#: not scanned (see the module docstring); each must exist so a rename is noticed
HOST_MODULES = {
    f"cloudshare_p2p/host/{name}.py"
    for name in ("__init__", "accounts", "audit", "auth", "ids", "jail", "layout", "openssh", "passwords",
                 "server", "sftp", "throttle")
}
NOT_SCANNED = {
    **{rel: "embedded host, POSIX-only by design" for rel in HOST_MODULES},
    "cloudshare_p2p/hostcli.py": "commands of the embedded host",
    "cloudshare_p2p/demo_stage.py": "starts and signals the embedded host",
}
#: not imported in the Windows-like import test: it loads asyncssh, whose POSIX branch (taken on the
#: Linux CI, `else: import fcntl, termios` in asyncssh/misc.py) needs the blocked modules, so the test
#: would prove nothing about Windows; and a client never loads the host
NOT_IMPORTED = HOST_MODULES
#: modules that build LOCAL paths (area/ and transport/ use "/" for remote SFTP paths, rightly)
def _package(name: str) -> set[str]:
    return {f"cloudshare_p2p/{name}/{p.name}" for p in (ROOT / "cloudshare_p2p" / name).glob("*.py")}


SNAPSHOT_MODULES, CLI_MODULES = _package("snapshot"), _package("cli")
LOCAL_PATH_MODULES = SNAPSHOT_MODULES | CLI_MODULES | {
    "cloudshare_p2p/localfiles.py", "cloudshare_p2p/registry.py", "cloudshare_p2p/registry_migrations.py",
    "cloudshare_p2p/secretstore.py", "cloudshare_p2p/worklock.py",
}
POSIX_MODULES = {"fcntl", "pwd", "grp", "termios", "resource", "posix"}
BLOCKED_IN_IMPORT_TEST = ("fcntl", "pwd", "grp", "termios")
POSIX_ATTRS = {
    "os": {"fork", "getuid", "geteuid", "getgid", "setsid", "killpg", "getpgid", "chown", "mkfifo",
           "statvfs", "sync", "kill", "pwrite", "pread", "pwritev", "preadv", "posix_fallocate",
           "posix_fadvise"},
    "signal": {"SIGKILL", "SIGSTOP", "SIGCONT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "alarm",
               "setitimer"},
}
#: exist on Windows with another meaning: only an OS test guards them
STRICT_ATTRS = {("os", "kill")}

# guard kinds
PLATFORM, FEATURE, TRY_IMPORT, TRY_ATTR = "platform", "feature", "try-import", "try-attr"
IMPORT_OK = {PLATFORM, FEATURE, TRY_IMPORT}
ATTR_OK = {PLATFORM, FEATURE, TRY_ATTR}
STRICT_OK = {PLATFORM}
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "AttributeError", "OSError", "Exception",
                 "BaseException"}
ATTR_ERRORS = {"AttributeError", "Exception", "BaseException"}


@dataclass
class Offence:
    line: int
    what: str
    allowed: frozenset[str]  # guard kinds that make it safe
    guards: frozenset[str]
    func: str | None  # innermost enclosing function


@dataclass
class Ref:
    name: str
    is_call: bool
    guards: frozenset[str]
    func: str | None


@dataclass
class Scan:
    offences: list[Offence] = field(default_factory=list)
    refs: list[Ref] = field(default_factory=list)
    private_funcs: set[str] = field(default_factory=set)


def _module_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> module, for `os`, `signal`, `sys`, `platform` however they were imported."""
    wanted = {"os", "signal", "sys", "platform"}
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                root = a.name.split(".")[0]
                if a.asname is None and root in wanted:
                    aliases[root] = root
                elif a.asname and a.name in wanted:
                    aliases[a.asname] = a.name
    return aliases


def _handler_names(handler: ast.ExceptHandler) -> set[str]:
    if handler.type is None:
        return {"BaseException"}
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    names = set()
    for t in types:
        if isinstance(t, ast.Name):
            names.add(t.id)
        elif isinstance(t, ast.Attribute):
            names.add(t.attr)
    return names


class _Walker:
    def __init__(self, aliases: dict[str, str], local_paths: bool) -> None:
        self.aliases = aliases
        self.local_paths = local_paths
        self.scan = Scan()

    # -- guard tests --------------------------------------------------------------------------------

    def _mod(self, node: ast.AST) -> str | None:
        return self.aliases.get(node.id) if isinstance(node, ast.Name) else None

    def _guard_kinds(self, test: ast.AST) -> set[str]:
        kinds = set()
        for n in ast.walk(test):
            if isinstance(n, ast.Attribute) and (
                (self._mod(n.value) == "os" and n.attr == "name")
                or (self._mod(n.value) == "sys" and n.attr == "platform")
                or (self._mod(n.value) == "platform" and n.attr == "system")
            ):
                kinds.add(PLATFORM)
            elif (
                isinstance(n, ast.Call)
                and isinstance(n.func, ast.Name)
                and (
                    n.func.id == "getattr"
                    or (n.func.id == "hasattr" and n.args and self._mod(n.args[0]) in {"os", "signal"})
                )
            ):
                kinds.add(FEATURE)
        return kinds

    @staticmethod
    def _leaves(body: list[ast.stmt]) -> bool:
        return bool(body) and isinstance(body[-1], ast.Return | ast.Raise | ast.Continue | ast.Break)

    # -- walking ------------------------------------------------------------------------------------

    def block(self, stmts: list[ast.stmt], guards: frozenset[str], func: str | None) -> None:
        for stmt in stmts:
            self.node(stmt, guards, func)
            if isinstance(stmt, ast.If) and self._leaves(stmt.body):
                kinds = self._guard_kinds(stmt.test)
                if kinds:  # early exit on a platform test: the rest of the block is guarded
                    guards = guards | kinds

    def node(self, node: ast.AST, guards: frozenset[str], func: str | None) -> None:
        if isinstance(node, ast.If):
            self.node(node.test, guards, func)
            inner = guards | self._guard_kinds(node.test)
            self.block(node.body, inner, func)
            self.block(node.orelse, inner, func)
            return
        if isinstance(node, ast.IfExp):
            self.node(node.test, guards, func)
            inner = guards | self._guard_kinds(node.test)
            self.node(node.body, inner, func)
            self.node(node.orelse, inner, func)
            return
        if isinstance(node, ast.BoolOp):  # `os.name != "nt" and os.kill(...)`
            acc = guards
            for value in node.values:
                self.node(value, acc, func)
                acc = acc | self._guard_kinds(value)
            return
        if isinstance(node, ast.Try | ast.TryStar):
            caught = set().union(*(_handler_names(h) for h in node.handlers)) if node.handlers else set()
            inner = set(guards)
            if caught & IMPORT_ERRORS:
                inner.add(TRY_IMPORT)
            if caught & ATTR_ERRORS:
                inner.add(TRY_ATTR)
            self.block(node.body, frozenset(inner), func)
            for h in node.handlers:
                self.block(h.body, guards, func)
            self.block(node.orelse, guards, func)
            self.block(node.finalbody, guards, func)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for d in node.decorator_list:
                self.node(d, guards, func)
            if func is None and node.name.startswith("_") and not node.name.startswith("__"):
                self.scan.private_funcs.add(node.name)
            # a function body runs when called, not where defined: guards reset, call sites decide
            self.block(node.body, frozenset(), node.name)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in POSIX_MODULES:
                    self._offend(node, f"import {a.name}", IMPORT_OK, guards, func)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            root = node.module.split(".")[0]
            if root in POSIX_MODULES:
                self._offend(node, f"from {node.module} import ...", IMPORT_OK, guards, func)
            for a in node.names:
                if a.name in POSIX_ATTRS.get(node.module, ()):
                    ok = STRICT_OK if (node.module, a.name) in STRICT_ATTRS else IMPORT_OK
                    self._offend(node, f"from {node.module} import {a.name}", ok, guards, func)
        elif isinstance(node, ast.Attribute):
            mod = self._mod(node.value)
            if mod in POSIX_ATTRS and node.attr in POSIX_ATTRS[mod]:
                ok = STRICT_OK if (mod, node.attr) in STRICT_ATTRS else ATTR_OK
                self._offend(node, f"{mod}.{node.attr}", ok, guards, func)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            self.scan.refs.append(Ref(node.func.id, True, guards, func))
            for child in [*node.args, *node.keywords]:
                self.node(child, guards, func)
            return
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            self.scan.refs.append(Ref(node.id, False, guards, func))
        if self.local_paths:
            self._hand_joined(node, guards, func)
        for child in ast.iter_child_nodes(node):
            self.node(child, guards, func)

    def _path_text(self, node: ast.AST) -> bool:
        """`str(x)` or `os.fspath(x)`: a path turned into text."""
        if not isinstance(node, ast.Call):
            return False
        f = node.func
        return (isinstance(f, ast.Name) and f.id == "str") or (
            isinstance(f, ast.Attribute) and f.attr == "fspath" and self._mod(f.value) == "os"
        )

    def _hand_joined(self, node: ast.AST, guards: frozenset[str], func: str | None) -> None:
        def slash(n: ast.AST) -> bool:
            return isinstance(n, ast.Constant) and isinstance(n.value, str) and "/" in n.value

        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            if (self._path_text(node.left) and slash(node.right)) or (
                slash(node.left) and self._path_text(node.right)
            ):
                self._offend(node, "path joined by hand with '/'", frozenset(), guards, func)
        elif isinstance(node, ast.JoinedStr):
            vals = node.values
            for i, v in enumerate(vals):
                if isinstance(v, ast.FormattedValue) and (self._path_text(v.value) or v.conversion == 115):
                    neighbours = vals[i - 1 : i] + vals[i + 1 : i + 2]
                    if any(slash(n) for n in neighbours):
                        self._offend(node, "path joined by hand with '/' (f-string)", frozenset(), guards,
                                     func)
                        break

    def _offend(self, node: ast.AST, what: str, ok: set[str] | frozenset[str], guards: frozenset[str],
                func: str | None) -> None:
        self.scan.offences.append(Offence(node.lineno, what, frozenset(ok), guards, func))


def _guarded_funcs(scan: Scan, ok: frozenset[str]) -> set[str]:
    """Private functions whose every reference is a call that is safe under `ok` (fixpoint)."""
    candidates = set(scan.private_funcs)
    changed = True
    while changed:
        changed = False
        for name in sorted(candidates):
            refs = [r for r in scan.refs if r.name == name]
            fine = bool(refs) and all(
                r.is_call and (r.guards & ok or (r.func in candidates and r.func != name)) for r in refs
            )
            if not fine:
                candidates.discard(name)
                changed = True
    return candidates


def offences_in_source(source: str, filename: str = "<src>", local_paths: bool = True) -> list[str]:
    """`line: what` for every unguarded POSIX-only use in `source`."""
    tree = ast.parse(source, filename)
    walker = _Walker(_module_aliases(tree), local_paths)
    walker.block(tree.body, frozenset(), None)
    scan = walker.scan
    cache: dict[frozenset[str], set[str]] = {}
    found = []
    for o in scan.offences:
        if o.guards & o.allowed:
            continue
        if o.allowed and o.func is not None:
            if o.allowed not in cache:
                cache[o.allowed] = _guarded_funcs(scan, o.allowed)
            if o.func in cache[o.allowed]:
                continue
        found.append(f"{o.line}: {o.what}")
    return found


def client_modules() -> list[str]:
    """Repository-relative paths of all client modules, scanned ones only."""
    paths = []
    for pkg in CLIENT_PACKAGES:
        files = sorted((ROOT / pkg).rglob("*.py"))
        assert files, f"{pkg}/ has no modules"
        paths += [p.relative_to(ROOT).as_posix() for p in files]
    for excluded in NOT_SCANNED:
        assert excluded in paths, f"{excluded} no longer exists: update NOT_SCANNED"
    return [p for p in paths if p not in NOT_SCANNED]


#: module -> offences in product code still to fix (strict xfail on that module only, so the other
#: modules stay enforced and a fix turns the xfail into a failure to remove it); none today
KNOWN_OFFENCES: dict[str, str] = {}


def _params() -> list:
    params = []
    for rel in client_modules():
        marks = ()
        if rel in KNOWN_OFFENCES:
            marks = (pytest.mark.xfail(strict=True, reason=KNOWN_OFFENCES[rel]),)
        params.append(pytest.param(rel, id=rel, marks=marks))
    return params


@pytest.mark.parametrize("rel", _params())
def test_client_module_has_no_unguarded_posix_only_call(rel):
    source = (ROOT / rel).read_text(encoding="utf-8")
    found = offences_in_source(source, rel, local_paths=rel in LOCAL_PATH_MODULES)
    assert not found, "POSIX-only use in the client's code path:\n" + "\n".join(
        f"{rel}:{f}" for f in found
    )


def test_the_scan_sees_through_aliases_and_honours_guards():
    """The checker itself: it finds what it must and lets guarded uses pass."""
    bad = textwrap.dedent('''
        import fcntl
        import os as _os
        import signal
        from os import getuid
        def f(p):
            _os.kill(1, 0)
            signal.signal(signal.SIGHUP, None)
            return str(p) + "/x", f"{str(p)}/{p}"
        def g():
            try:
                os_uid = _os.getuid()
            except OSError:
                os_uid = 0
            if hasattr(_os, "kill"):
                _os.kill(1, 15)
            return os_uid
    ''')
    found = [f.split(": ", 1)[1] for f in offences_in_source(bad)]
    assert found == [
        "import fcntl", "from os import getuid", "os.kill", "signal.SIGHUP",
        "path joined by hand with '/'", "path joined by hand with '/' (f-string)", "os.getuid", "os.kill",
    ]
    good = textwrap.dedent('''
        import os
        import signal
        import sys
        try:
            import fcntl
        except ImportError:
            fcntl = None
        if sys.platform != "win32":
            import pwd
        def uid():
            try:
                return os.getuid()
            except AttributeError:
                return None
        def stop(pid):
            if os.name == "nt":
                return
            os.kill(pid, signal.SIGKILL)
        def hup():
            if hasattr(signal, "SIGHUP"):
                signal.signal(signal.SIGHUP, None)
            return getattr(signal, "SIGUSR1", None)
        def _alive(pid):
            os.kill(pid, 0)
        def check(pid):
            return os.name != "nt" and _alive(pid)
        def label(a, b):
            return f"{a}/{b}" + "/"
    ''')
    assert offences_in_source(good) == []
    # a private helper that is also called without a guard, or passed around, is not excused
    leaky = good + "\ncheck2 = _alive\n"
    assert [f.split(": ", 1)[1] for f in offences_in_source(leaky)] == ["os.kill"]


IMPORT_SCRIPT = """
import importlib, sys, traceback
for name in {blocked!r}:
    sys.modules[name] = None  # `import name` now raises ImportError, as on Windows
failed = []
for mod in {modules!r}:
    try:
        importlib.import_module(mod)
    except BaseException:
        failed.append(mod + ":\\n" + traceback.format_exc())
for name in {blocked!r}:
    assert sys.modules[name] is None, name + " was replaced during the imports"
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_client_module_imports_without_posix_only_modules():
    modules = []
    for pkg in CLIENT_PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            rel = p.relative_to(ROOT).as_posix()
            if rel in NOT_IMPORTED:
                continue
            dotted = ".".join(p.relative_to(ROOT).with_suffix("").parts)
            modules.append(dotted.removesuffix(".__init__"))
    assert "cloudshare_p2p.cli" in modules and "cloudshare_p2p.hostcli" in modules
    script = IMPORT_SCRIPT.format(blocked=BLOCKED_IN_IMPORT_TEST, modules=modules)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, (
        f"client modules that fail to import without {', '.join(BLOCKED_IN_IMPORT_TEST)}:\n"
        f"{proc.stdout}{proc.stderr}"
    )
