"""Login passwords as accounts.json stores them: salted scrypt records, checked in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

#: scrypt parameters recorded with each hash (n=2**15, r=8, p=1: ~32 MiB, ~50-100 ms)
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2**15, 8, 1, 32


def hash_password(password: str) -> dict[str, Any]:
    """A salted scrypt record of `password` (what accounts.json stores)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=256 * 1024 * 1024,
        dklen=SCRYPT_LEN,
    )
    return {
        "alg": "scrypt",
        "n": SCRYPT_N,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": base64.b64encode(salt).decode(),
        "hash": base64.b64encode(digest).decode(),
    }


def verify_password(record: dict[str, Any] | None, password: str) -> bool:
    """True if `password` matches the scrypt `record` (constant-time comparison)."""
    if not record or record.get("alg") != "scrypt":
        return False
    try:
        salt = base64.b64decode(record["salt"])
        expected = base64.b64decode(record["hash"])
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=salt,
            n=int(record["n"]),
            r=int(record["r"]),
            p=int(record["p"]),
            maxmem=256 * 1024 * 1024,
            dklen=len(expected),
        )
    except (KeyError, ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)
