"""Keys and sealed blobs: pure functions, no file or network I/O.

Key hierarchy::

    share password --scrypt(salt, params)--> KEK --AES-GCM wrap--> data key (random, 32 bytes)
    data key --HKDF-SHA256--> id_key  (keyed chunk ids: HMAC-SHA256, the host learns nothing)
                          \\-> enc_key (AES-256-GCM sealing of chunks and manifests)

Sealed blob layout: ``MAGIC b"CSB1" | flags (1 byte, 1 = zstd) | nonce (12) | ciphertext+tag``.
The AAD is ``kind + b":" + object_id`` so a blob cannot be swapped for another object.
The header is not in the AAD; `open_sealed` accepts exactly one header value, so it is
not malleable either.

Thread safety: zstd contexts are not thread-safe, so they are cached per thread.
"""

from __future__ import annotations

import hmac
import os
import threading
import unicodedata
from dataclasses import dataclass
from hashlib import sha256

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from . import errors
from .i18n import _

KDF_DEFAULTS: dict = {"name": "scrypt", "n": 2**15, "r": 8, "p": 1, "length": 32}
"""Recorded in the area config so the parameters can be raised later."""

MAGIC = b"CSB1"
FLAG_ZSTD = 1
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32
HEADER_SIZE = len(MAGIC) + 1
KIND_CHUNK = b"chunk"
KIND_MANIFEST = b"manifest"
KIND_POLICY = b"policy"  # a retention policy in a `policy` log entry (format 2), id = its seq

_KEY_AAD_PREFIX = b"cloudshare-key:"
_MAX_SCRYPT_MEMORY = 1 << 30  # 128 * n * r bytes; the config comes from the host, bound it
_MAX_SCRYPT_P = 16

_tls = threading.local()


# --- password and data key ---------------------------------------------------


def new_salt() -> bytes:
    """16 random bytes for the scrypt salt."""
    return os.urandom(16)


def new_data_key() -> bytes:
    """A fresh random 32-byte data key."""
    return os.urandom(KEY_SIZE)


def _int_param(params: dict, name: str) -> int:
    value = params.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(_("bad kdf parameter {name}: {value!r}").format(name=name, value=value))
    return value


def derive_kek(password: str, salt: bytes, params: dict) -> bytes:
    """Derive the key-encryption key from the share password (NFC-normalized, UTF-8).

    Raises ValueError for an unknown kdf name or out-of-bounds parameters (the
    parameters are read from the host, so they are bounded to avoid memory exhaustion).
    """
    if params.get("name") != "scrypt":
        raise ValueError(_("unknown kdf: {kdf!r}").format(kdf=params.get('name')))
    n, r, p = (_int_param(params, k) for k in ("n", "r", "p"))
    length = _int_param(params, "length")
    if n & (n - 1) or n < 2 or 128 * n * r > _MAX_SCRYPT_MEMORY or p > _MAX_SCRYPT_P:
        raise ValueError(_("kdf parameters out of bounds: n={n} r={r} p={p}").format(n=n, r=r, p=p))
    if length != KEY_SIZE:
        raise ValueError(_("kdf length must be {key_size}, not {length}").format(
            key_size=KEY_SIZE, length=length))
    secret = unicodedata.normalize("NFC", password).encode("utf-8")
    return Scrypt(salt=salt, length=length, n=n, r=r, p=p).derive(secret)


def wrap_key(kek: bytes, data_key: bytes, area_id: str) -> bytes:
    """Encrypt the data key under the KEK, bound to the area id; returns nonce||ct||tag."""
    nonce = os.urandom(NONCE_SIZE)
    aad = _KEY_AAD_PREFIX + area_id.encode("utf-8")
    return nonce + AESGCM(kek).encrypt(nonce, data_key, aad)


def unwrap_key(kek: bytes, wrapped: bytes, area_id: str) -> bytes:
    """Recover the data key; WrongPassword if the KEK (the password) does not match."""
    if len(wrapped) != NONCE_SIZE + KEY_SIZE + TAG_SIZE:
        raise errors.AreaCorrupt(_("the wrapped data key has a wrong size"))
    aad = _KEY_AAD_PREFIX + area_id.encode("utf-8")
    try:
        return AESGCM(kek).decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], aad)
    except InvalidTag:
        raise errors.WrongPassword(_("the share password does not match")) from None


# --- working keys --------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """The data key and the two keys derived from it."""

    data_key: bytes
    id_key: bytes
    enc_key: bytes

    def __repr__(self) -> str:  # never print key material
        return "Keys(<redacted>)"


def _hkdf(data_key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info).derive(data_key)


def keys_from_data_key(data_key: bytes) -> Keys:
    """Derive the chunk-id key and the encryption key (HKDF-SHA256)."""
    if len(data_key) != KEY_SIZE:
        raise ValueError(_("the data key must be 32 bytes"))
    return Keys(
        data_key=data_key,
        id_key=_hkdf(data_key, b"cloudshare-chunk-id"),
        enc_key=_hkdf(data_key, b"cloudshare-enc"),
    )


_hmac_templates: dict[bytes, hmac.HMAC] = {}


def chunk_digest(keys: Keys, plaintext: bytes | memoryview) -> bytes:
    """HMAC-SHA256(id_key, plaintext), 32 bytes. A keyed template is copied per call: about
    2.5x faster than `hmac.digest` for the small chunks of format 2 (no per-call key setup)."""
    template = _hmac_templates.get(keys.id_key)
    if template is None:
        template = _hmac_templates.setdefault(keys.id_key, hmac.new(keys.id_key, digestmod=sha256))
    mac = template.copy()
    mac.update(plaintext)
    return mac.digest()


def chunk_id(keys: Keys, plaintext: bytes | memoryview) -> str:
    """Keyed content address: HMAC-SHA256(id_key, plaintext) as 64 lowercase hex chars."""
    return chunk_digest(keys, plaintext).hex()


def verify_chunk(keys: Keys, object_id: str, plaintext: bytes) -> None:
    """Raise AreaCorrupt unless `plaintext` hashes to `object_id`."""
    if not hmac.compare_digest(chunk_id(keys, plaintext), object_id):
        raise errors.AreaCorrupt(_("chunk {object_id} failed verification").format(object_id=object_id))


# --- sealing -----------------------------------------------------------------------


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = _tls.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_tls, "decompressor"):
        _tls.decompressor = zstandard.ZstdDecompressor()
    return _tls.decompressor


def _aad(kind: bytes, object_id: str) -> bytes:
    return kind + b":" + object_id.encode("ascii")


PROBE = 1 << 14  # bytes of a large plaintext tried at each of three places before compressing it
FAST_LEVEL = -5  # for a plaintext that does not compress: still a zstd frame, about 4x faster


def _level_for(plaintext: bytes, level: int) -> int:
    """`level`, or FAST_LEVEL when samples of a large plaintext do not shrink by 2 % (random
    or already compressed data: zstd -3 spends three quarters of a frame's sealing on it)."""
    size = len(plaintext)
    if size < 16 * PROBE:
        return level
    sample = b"".join(plaintext[at : at + PROBE] for at in (0, (size - PROBE) // 2, size - PROBE))
    return FAST_LEVEL if len(_compressor(1).compress(sample)) > 0.98 * len(sample) else level


def seal(keys: Keys, kind: bytes, object_id: str, plaintext: bytes, level: int = 3) -> bytes:
    """Compress (zstd; fast for a large plaintext that does not compress) then encrypt
    (AES-256-GCM, random nonce) one chunk or manifest."""
    compressed = _compressor(_level_for(plaintext, level)).compress(plaintext)
    nonce = os.urandom(NONCE_SIZE)
    sealed = AESGCM(keys.enc_key).encrypt(nonce, compressed, _aad(kind, object_id))
    return b"".join((MAGIC, bytes((FLAG_ZSTD,)), nonce, sealed))


def _decompress_bounded(compressed: bytes, max_plain: int) -> bytes:
    """Decompress one zstd frame, refusing to produce more than `max_plain` bytes.

    `max_output_size` is ignored by zstandard when the frame declares its size, so the
    declared size is checked first; frames without a declared size are refused.
    """
    declared = zstandard.get_frame_parameters(compressed).content_size
    if declared == zstandard.CONTENTSIZE_UNKNOWN or declared > max_plain:
        raise ValueError(_("declared size missing or above the bound"))
    out = _decompressor().decompress(
        compressed, max_output_size=max_plain, allow_extra_data=False
    )
    if len(out) != declared:
        raise ValueError(_("size differs from the declared size"))
    return out


def open_sealed(
    keys: Keys, kind: bytes, object_id: str, blob: bytes, max_plain: int = 64 << 20
) -> bytes:
    """Verify, decrypt and decompress a sealed blob; AreaCorrupt on any failure."""
    failed = errors.AreaCorrupt(_("{kind} {object_id} failed verification").format(
        kind=kind.decode('ascii', 'replace'), object_id=object_id))
    body = HEADER_SIZE + NONCE_SIZE
    if len(blob) < body + TAG_SIZE or blob[:HEADER_SIZE] != MAGIC + bytes((FLAG_ZSTD,)):
        raise failed
    nonce = blob[HEADER_SIZE:body]
    try:
        compressed = AESGCM(keys.enc_key).decrypt(nonce, blob[body:], _aad(kind, object_id))
        return _decompress_bounded(compressed, max_plain)
    except (InvalidTag, zstandard.ZstdError, ValueError):
        raise failed from None
