"""A holder that dies in the middle of a commit: `python -m tests.commit_child STEP JSON`.

STEP is where the process kills itself: after some chunks ('chunks': the second version-1
chunk or the first format-2 pack), after the manifest before the log entry ('manifest'), or
after the log entry before releasing ('log').
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from cloudshare_p2p.area import Area, Grant
from cloudshare_p2p.snapshot import LocalSnapshot
from tests.parties import open_area, party, session_for
from tests.serverinfo import ShareServer

DIED = 9


def main() -> None:
    step, raw = sys.argv[1], json.loads(sys.argv[2])
    raw["root"], raw["identity"] = Path(raw["root"]), Path(raw["identity"])
    raw["ports"] = tuple(raw.get("ports") or ())
    server = ShareServer(**raw)
    data = Path(os.environ["CHILD_DATA"])
    with tempfile.TemporaryDirectory() as home:
        session = session_for(server, Path(home))
        area = open_area(session, os.environ["CHILD_AREA"])
        me = party("dying")
        grant = area.acquire(me, lease_seconds=60)
        assert isinstance(grant, Grant)
        print(grant.lease.generation, flush=True)
        die_at(step, area, session)
        area.commit(grant, me, LocalSnapshot.scan(data, area.keys), base=area.newest_number())
        area.release(grant, me)
    sys.exit(0)


def die_at(step: str, area: Area, session) -> None:
    publish = session.publish
    seen = {"chunks": 0}

    def publish_then_maybe_die(tmp: str, final: str) -> bool:  # records: config, lock, log
        if step == "manifest" and "/log/" in final:
            os._exit(DIED)  # manifest and chunks are in place, no log entry
        return publish(tmp, final)

    session.publish = publish_then_maybe_die
    put_object = session.put_object

    def put_then_maybe_die(tmp: str, final: str, data: bytes, folder: str | None = None) -> bool:
        done = put_object(tmp, final, data, folder)  # chunks, packs, manifests
        if "/chunks/" in final or "/packs/" in final:
            seen["chunks"] += 2 if "/packs/" in final else 1  # a pack holds many chunks
            if step == "chunks" and seen["chunks"] >= 2:
                os._exit(DIED)
        return done

    session.put_object = put_then_maybe_die
    if step == "log":
        area.release = lambda *a, **k: os._exit(DIED)


if __name__ == "__main__":
    main()
