"""`cloudshare demo`: the whole story on an embedded host, narrated for a person at the terminal.

Everything runs on this machine in one folder (temporary, or `--keep DIR`): the firm's
embedded SFTP host on a free 127.0.0.1 port, and three homes (the firm, the client, the
client's laptop) that each run the real `cloudshare` command as a subprocess. Every step
checks its exit code and the key words of its output; the first surprise stops the story,
says what happened, and the demo exits 1.

This module is the story, read top to bottom; the stage it plays on (the narrator, the
commands, the host) is demo_stage.py.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .demo_stage import AREA, COMM_ID, DATASET, NAMES, REMOTE, Demo, DemoFailure, cloudshare_command
from .i18n import _

SHORT_LEASE = "3s"

LEDGER = """account,name,balance
1000,Cash,120000
1100,Bank (Mizuho),2450000
4000,Sales,-3100000
5000,Purchases,1800000
"""
MARCH = """date,debit,credit,amount,memo
2026-03-02,1100,4000,330000,Invoice 0312 Kato Shoji
2026-03-05,5000,1100,148500,Stock purchase
2026-03-10,1000,4000,22000,Cash sale
"""


def run_demo(keep: Path | None) -> int:
    """Run the narrated story; 0 only if every step behaved as expected."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")  # a terminal without UTF-8 still gets the story
    if keep is not None:
        keep = Path(keep)
        if keep.exists() and any(keep.iterdir()):
            print(_("Error: {folder} is not empty; give a new or empty folder to --keep").format(folder=keep),
                  file=sys.stderr)
            return 2
        keep.mkdir(parents=True, exist_ok=True)
        base = keep.resolve()
        tmp = None
    else:
        tmp = tempfile.TemporaryDirectory(prefix="cloudshare-demo-")
        base = Path(tmp.name).resolve()
    demo = Demo(base, cloudshare_command())
    started = time.monotonic()
    try:
        _story(demo)
    except DemoFailure as exc:
        demo.say()
        demo.say(_("✗ The demo stopped: a step did not behave as expected."))
        demo.show(str(exc), "  ")
        if demo.host_log is not None and demo.host_log.exists():
            demo.say(_("  Last lines of the host's log:"))
            demo.show("\n".join(demo.host_log.read_text(errors="replace").splitlines()[-8:]), "    ")
        return 1
    except KeyboardInterrupt:
        demo.say(_("\n✗ interrupted"))
        return 1
    finally:
        status = demo.stop_host(quiet=True)
        if status not in (None, 0):
            demo.say(_("(the host was still running and stopped with status {status})").format(status=status))
        if tmp is not None:
            tmp.cleanup()
    demo.say()
    demo.say(_("All {checks} checks passed ({commands} commands, {seconds:.0f} s).").format(
        checks=demo.checks, commands=demo.commands, seconds=time.monotonic() - started))
    if keep is not None:
        demo.say(_("Everything is kept in {base}: look around with `cloudshare --home {firm_home} status`")
            .format(base=base, firm_home=base / "firm"))
    return 0


# --- the story --------------------------------------------------------------------------------------


def _story(d: Demo) -> None:
    d.say(_("Cloud Share demo: an accounting firm and its client share one set of books\n"
            "through an SFTP host the firm runs. Everything happens in {base}\n"
            "(the commands below run there; `--home firm` is the firm's computer, `--home client`\n"
            "the client's office PC, `--home client2` the client's laptop).").format(base=d.base))

    # 1 --------------------------------------------------------------------------------------------
    d.header(_("1. The firm starts its host"))
    res = d.cloudshare(None, "host", "init", "host", contains=["host key fingerprint: SHA256:"])
    d.fingerprint = next(w for w in res.output.split() if w.startswith("SHA256:"))
    keys = d.base / "keys"
    keys.mkdir()
    _make_key(keys / COMM_ID)
    d.say(_("(the demo made an SSH key pair for the communication ID: keys/{comm_id}, keys/{comm_id}.pub)")
        .format(comm_id=COMM_ID))
    d.cloudshare(None, "host", "add-id", "host", COMM_ID, "--authorized-key", f"keys/{COMM_ID}.pub",
                 contains=[f"added communication ID {COMM_ID}"])
    d.start_host()
    d.say(_("The firm gives its client the host key fingerprint: {fingerprint}").format(
        fingerprint=d.fingerprint))

    # 2 --------------------------------------------------------------------------------------------
    d.header(_("2. Three computers register the host (the same communication ID)"))
    d.say(_("Each computer runs `cloudshare` with its own CLOUDSHARE_NAME (the name others see on the\n"
            "lock: {names}) and the share password in\n"
            "CLOUDSHARE_PASSWORD (a person types it instead).").format(
        names=", ".join(f'"{n}"' for n in NAMES.values())))
    url = f"sftp://{COMM_ID}@127.0.0.1:{d.port}"
    for who in NAMES:
        d.cloudshare(who, "remote", "add", REMOTE, url, "--identity", f"keys/{COMM_ID}",
                     "--accept-host-key", d.fingerprint, contains=[f"remote {REMOTE} added", d.fingerprint])
    d.ok(_("each computer pinned the host key the firm announced"))

    # 3 --------------------------------------------------------------------------------------------
    d.header(_("3. The firm shares its books; the client and the laptop join"))
    books = {who: d.base / who / "books" for who in NAMES}
    (books["firm"] / "journal").mkdir(parents=True)
    (books["firm"] / "ledger.csv").write_text(LEDGER, encoding="utf-8")
    (books["firm"] / "journal" / "2026-03.csv").write_text(MARCH, encoding="utf-8")
    d.say(_("(the demo wrote the firm's books: firm/books/ledger.csv, firm/books/journal/2026-03.csv)"))
    d.cloudshare("firm", "share", DATASET, "firm/books", "--remote", REMOTE, "--area", AREA, "--yes",
                 contains=[f"shared in area {AREA}"])
    for who in ("client", "client2"):
        d.cloudshare(who, "join", DATASET, f"{who}/books", "--remote", REMOTE, "--area", AREA,
                     contains=["received version 1", "now shared"])
    d.check(_read(books["client"], "journal/2026-03.csv") == MARCH
            and _read(books["client2"], "ledger.csv") == LEDGER,
            _("both client computers now hold exactly the firm's books"),
            _("a joined copy differs from the firm's books"))

    # 4 --------------------------------------------------------------------------------------------
    d.header(_("4. The client opens the books; the firm is refused"))
    client = NAMES["client"]
    d.cloudshare("client", "open", DATASET, "--note", "entering March receipts", contains=["locked by you"])
    d.cloudshare("firm", "open", DATASET, expect=3,
                 contains=[f"locked by {client}", "since", "until", "entering March receipts"])
    d.ok(_("the firm was refused (exit 3) and sees who holds the lock: {client}, since/until, the note")
        .format(client=client))
    d.cloudshare("firm", "areas", REMOTE, contains=[f"locked by {client}"])
    receipt = "2026-03-18,1000,4000,55000,March receipt (entered by the client)\n"
    _append(books["client"] / "journal" / "2026-03.csv", receipt)
    d.say(_("(the client adds a March receipt to client/books/journal/2026-03.csv)"))
    d.cloudshare("client", "close", DATASET, contains=["sent as version 2", "lock released"])
    d.cloudshare("firm", "open", DATASET, "--note", "monthly review",
                 contains=["received version 2", "locked by you"])
    d.check(receipt in _read(books["firm"], "journal/2026-03.csv"),
            _("the firm received the client's receipt just by opening"),
            _("the firm's copy does not show the client's receipt"))
    d.cloudshare("firm", "close", DATASET, contains=["closed without changes", "lock released"])

    # 5 --------------------------------------------------------------------------------------------
    d.header(_("5. A holder vanishes: the laptop opens the books, then its lid is closed"))
    laptop = NAMES["client2"]
    d.cloudshare("client2", "open", DATASET, "--lease", SHORT_LEASE, "--note", "on the train",
                 contains=["received version 2", "locked by you"])
    d.say(_("(a {lease} lease, for the demo: the default is 8 hours. The laptop now goes silent.)").format(
        lease=SHORT_LEASE))
    d.cloudshare("firm", "open", DATASET, expect=3, contains=[f"locked by {laptop}", "until"])
    d.say(_("The firm waits for the laptop's lease to run out (`--wait` alone waits until then):"))
    t0 = time.monotonic()
    d.cloudshare("firm", "open", DATASET, "--wait", "--note", "year-end adjustments",
                 contains=["locked by you"])
    d.ok(_("the firm got the lock after {seconds:.0f} s, without anyone breaking it").format(
        seconds=time.monotonic() - t0))
    adjustment = "2026-03-31,5000,1100,12000,Year-end adjustment (firm)\n"
    _append(books["firm"] / "journal" / "2026-03.csv", adjustment)
    d.say(_("(the firm adds an adjustment to firm/books/journal/2026-03.csv)"))
    late = "2026-03-20,1000,4000,99999,Entered on the laptop after its lease ran out\n"
    _append(books["client2"] / "journal" / "2026-03.csv", late)
    d.say(_("The laptop wakes up, adds an entry it typed offline, and closes:"))
    res = d.cloudshare("client2", "close", DATASET, expect=6, contains=["kept aside"])
    kept = _kept_aside(d.base / "client2", books["client2"])
    d.check(kept is not None and late in _read(kept, "journal/2026-03.csv"),
            _("fenced (exit 6): the laptop's work is kept aside as {path}").format(path=_rel(d.base, kept)),
            _("no kept-aside copy with the laptop's entry next to client2/books:\n{output}").format(
                output=res.output))
    d.cloudshare("firm", "close", DATASET, contains=["sent as version 3", "lock released"])
    firm_march = _read(books["firm"], "journal/2026-03.csv")
    d.check(adjustment in firm_march and late not in firm_march,
            _("nothing was overwritten: version 3 is the firm's, without the laptop's late entry"),
            _("the firm's version was changed by the late laptop"))

    # 6 --------------------------------------------------------------------------------------------
    d.header(_("6. History and the data list on each computer"))
    d.cloudshare("client", "history", DATASET, contains=["v1", "v2", "v3", NAMES["firm"], client])
    for who in NAMES:
        d.cloudshare(who, "status", contains=[DATASET, f"{REMOTE}/{AREA}"])

    # 7 --------------------------------------------------------------------------------------------
    d.header(_("7. The laptop stops sharing on its own; the others go on"))
    d.cloudshare("client2", "leave", DATASET, "--yes", contains=["no longer uses Cloud Share"])
    d.cloudshare("client2", "status", contains=["unshared"])
    d.cloudshare("client", "open", DATASET, "--note", "April opening balances",
                 contains=["received version 3", "locked by you"])
    april = "2026-04-01,1000,4000,10000,April opening entry (client)\n"
    _append(books["client"] / "journal" / "2026-03.csv", april)
    d.cloudshare("client", "close", DATASET, contains=["sent as version 4", "lock released"])
    d.ok(_("the firm and the client still share the books (version 4)"))

    # 8 --------------------------------------------------------------------------------------------
    d.header(_("8. The firm deletes the shared copy for everyone"))
    d.cloudshare("firm", "delete-area", REMOTE, AREA, "--yes",
                 contains=["newest version (4)", "Cloud Share data deleted"])
    d.check(april in _read(books["firm"], "journal/2026-03.csv"),
            _("the firm received version 4 before deleting: its copy is complete"),
            _("the firm's copy lacks the client's last version"))
    d.cloudshare("firm", "status", contains=["unshared"])
    d.cloudshare("firm", "areas", REMOTE, contains=["no areas"])
    d.say(_("The client selects the books again:"))
    d.cloudshare("client", "open", DATASET, expect=4, contains=["gone"])
    d.ok(_("the client is told the area's data is gone (exit 4)"))
    d.cloudshare("client", "leave", DATASET, "--yes", contains=["no longer uses Cloud Share"])
    res = d.cloudshare("client", "status", contains=["unshared"])
    d.check("☁" not in res.output, _("the cloud mark is gone from the client's data list"),
            _("the client's data list still shows the books as shared"))
    d.check(april in _read(books["client"], "journal/2026-03.csv"),
            _("the client keeps its own copy of the books"), _("the client's copy was lost"))

    # 9 --------------------------------------------------------------------------------------------
    d.header(_("9. The firm stops its host"))
    status = d.stop_host()
    d.check(status == 0, _("the host stopped cleanly (exit 0)"), _("the host exited with status {status}")
        .format(status=status))
    log_lines = (d.host_log.read_text(errors="replace") if d.host_log else "").splitlines()
    d.show("\n".join(log_lines[-3:]), "    host.log: ")
    d.check(not any("Traceback" in line for line in log_lines), _("the host's log has no errors"),
            _("the host's log shows a Traceback"))

    d.header(_("Summary"))
    d.show(
        _("• open received the newest version and took the lock; close sent it and released it\n"
        "• while the client held the lock the firm was refused (exit 3) and saw who, since, until\n"
        "• the laptop's lease ran out: the firm got the lock by waiting; the laptop's late close was\n"
        "  fenced (exit 6), its work kept aside, nothing overwritten\n"
        "• the laptop stopped alone; the firm and the client went on\n"
        "• the firm deleted the area for everyone after receiving the newest version; the client\n"
        "  was told the data is gone (exit 4) and released Cloud Share"),
        "  ",
    )


# --- helpers ----------------------------------------------------------------------------------------


def _make_key(private_path: Path) -> None:
    """An Ed25519 key pair in OpenSSH format (private 0600, public `.pub`)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    Path(f"{private_path}.pub").write_text(public.decode() + f" {COMM_ID}@demo\n", encoding="utf-8")


def _kept_aside(folder: Path, original: Path) -> Path | None:
    """The sibling of `original` that keep_aside made (newest first), if any."""
    found = sorted((p for p in folder.iterdir() if p.name.startswith(original.name + ".") and p != original),
                   key=lambda p: p.stat().st_mtime_ns, reverse=True)
    return found[0] if found else None


def _read(root: Path, rel: str = "") -> str:
    path = root / rel if rel else root
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def _rel(base: Path, path: Path | None) -> str:
    if path is None:
        return "?"
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)
