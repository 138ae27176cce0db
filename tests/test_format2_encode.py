"""Format 2: the streamed manifest encoding equals the canonical json.dumps form, byte for byte."""

from __future__ import annotations

import json
import random

from cloudshare_p2p.snapshot import manifest2 as m2


def reference(patch: m2.Patch) -> bytes:
    """The canonical JSON as json.dumps writes it (the encoding before it was streamed)."""
    def op_json(op: m2.Op) -> list:
        if op[0] == "c":
            return list(op)
        if op[0] == "d":
            return ["d", "".join(op[1])]
        return ["n", op[1], op[2], "".join(op[3]), list(op[4])]

    doc = {"version": 2, "kind": patch.kind, "parent": patch.parent, "depth": patch.depth,
           "frames": [list(f) for f in patch.frames],
           "files": [{"path": f.path, "size": f.size, "mode": f.mode, "mtime": f.mtime,
                      "chunker": f.chunker, "ops": [op_json(o) for o in f.ops]} for f in patch.files]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def random_patch(r: random.Random) -> m2.Patch:
    def h() -> str:
        return f"{r.getrandbits(256):064x}"

    def op() -> m2.Op:
        kind = r.choice("cdn")
        if kind == "c":
            return ("c", r.randrange(100), r.randrange(1, 100))
        if kind == "d":
            return ("d", tuple(h() for _ in range(r.randrange(1, 4))))
        n = r.randrange(1, 4)
        return ("n", r.randrange(5), r.randrange(1000), tuple(h() for _ in range(n)),
                tuple(r.randrange(1, 5000) for _ in range(n)))

    frames = tuple(m2.Frame(h(), r.randrange(1 << 26), r.randrange(1, 1 << 20))
                   for _ in range(r.randrange(4)))
    paths = ["", "a/b.db", '日本語/帳簿 "x".db', "t\\u\x7f"]
    mtimes = [0.0, 1795908990.6385539, r.random() * 1e9, 1e16, 3.0]
    files = tuple(m2.PatchFile(r.choice(paths), r.randrange(1 << 40), r.randrange(0o7777), r.choice(mtimes),
                               "pages-4096x1", tuple(op() for _ in range(r.randrange(5))))
                  for _ in range(r.randrange(4)))
    return m2.Patch(r.choice(["file", "folder"]), r.choice([None, h()]), r.randrange(3), frames, files)


def test_encode_parts_equal_canonical_json() -> None:
    r = random.Random(1)
    for _ in range(300):
        patch = random_patch(r)
        assert m2.encode(patch) == reference(patch)
        assert m2.encoded_size(patch) == len(reference(patch))
