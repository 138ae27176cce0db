"""crypto: key wrapping, keyed chunk ids, sealing and its failure modes."""

from __future__ import annotations

import os

import pytest
import zstandard

from cloudshare_p2p import crypto, errors

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1, "length": 32}


@pytest.fixture(scope="module")
def keys() -> crypto.Keys:
    return crypto.keys_from_data_key(crypto.new_data_key())


def test_wrap_unwrap_round_trip_and_wrong_password() -> None:
    salt, data_key = crypto.new_salt(), crypto.new_data_key()
    kek = crypto.derive_kek("Geheim ü", salt, FAST_KDF)
    wrapped = crypto.wrap_key(kek, data_key, "area-1")
    assert crypto.unwrap_key(crypto.derive_kek("Geheim ü", salt, FAST_KDF), wrapped, "area-1") == data_key
    with pytest.raises(errors.WrongPassword):
        crypto.unwrap_key(crypto.derive_kek("geheim ü", salt, FAST_KDF), wrapped, "area-1")
    with pytest.raises(errors.WrongPassword):  # bound to the area id
        crypto.unwrap_key(kek, wrapped, "area-2")


def test_password_is_nfc_normalized() -> None:
    salt = crypto.new_salt()
    nfc, nfd = "M\u00fcller", "Mu\u0308ller"
    assert crypto.derive_kek(nfc, salt, FAST_KDF) == crypto.derive_kek(nfd, salt, FAST_KDF)


@pytest.mark.parametrize(
    "params",
    [
        {**FAST_KDF, "name": "argon2"},
        {**FAST_KDF, "n": 2**30},  # 128 GiB: a hostile config must not exhaust memory
        {**FAST_KDF, "n": 1000},
        {**FAST_KDF, "r": "8"},
        {**FAST_KDF, "length": 16},
    ],
)
def test_bad_kdf_params(params: dict) -> None:
    with pytest.raises(ValueError):
        crypto.derive_kek("pw", crypto.new_salt(), params)


def test_defaults_are_accepted() -> None:
    assert len(crypto.derive_kek("pw", crypto.new_salt(), crypto.KDF_DEFAULTS)) == 32


def test_seal_open_round_trip(keys: crypto.Keys) -> None:
    for data in (b"", b"x", b"ledger " * 50_000, os.urandom(100_000)):
        blob = crypto.seal(keys, b"chunk", "id1", data)
        assert blob[:4] == crypto.MAGIC and blob[4] == 1
        assert crypto.open_sealed(keys, b"chunk", "id1", blob) == data
    blob = crypto.seal(keys, b"chunk", "id1", b"ledger " * 50_000)
    assert len(blob) < 10_000  # compressed


def test_seal_is_randomized(keys: crypto.Keys) -> None:
    assert crypto.seal(keys, b"chunk", "a", b"same") != crypto.seal(keys, b"chunk", "a", b"same")


@pytest.mark.parametrize("pos", [0, 4, 5, 20, -1])
def test_flipped_byte_is_corrupt(keys: crypto.Keys, pos: int) -> None:
    blob = bytearray(crypto.seal(keys, b"manifest", "m1", b"hello world" * 10))
    blob[pos] ^= 0x01
    with pytest.raises(errors.AreaCorrupt, match="manifest m1 failed verification"):
        crypto.open_sealed(keys, b"manifest", "m1", bytes(blob))


def test_truncated_blob_is_corrupt(keys: crypto.Keys) -> None:
    blob = crypto.seal(keys, b"chunk", "c", b"data")
    for cut in (0, 3, 17, len(blob) - 1):
        with pytest.raises(errors.AreaCorrupt):
            crypto.open_sealed(keys, b"chunk", "c", blob[:cut])


def test_wrong_aad_is_corrupt(keys: crypto.Keys) -> None:
    blob = crypto.seal(keys, b"chunk", "id-a", b"payload")
    with pytest.raises(errors.AreaCorrupt):
        crypto.open_sealed(keys, b"chunk", "id-b", blob)
    with pytest.raises(errors.AreaCorrupt):
        crypto.open_sealed(keys, b"manifest", "id-a", blob)


def test_other_keys_cannot_open(keys: crypto.Keys) -> None:
    other = crypto.keys_from_data_key(crypto.new_data_key())
    blob = crypto.seal(keys, b"chunk", "c", b"payload")
    with pytest.raises(errors.AreaCorrupt):
        crypto.open_sealed(other, b"chunk", "c", blob)


def test_chunk_ids_are_keyed(keys: crypto.Keys) -> None:
    other = crypto.keys_from_data_key(crypto.new_data_key())
    cid = crypto.chunk_id(keys, b"page")
    assert len(cid) == 64 and cid == cid.lower() and int(cid, 16) >= 0
    assert cid == crypto.chunk_id(keys, b"page")
    assert cid != crypto.chunk_id(other, b"page")
    crypto.verify_chunk(keys, cid, b"page")
    with pytest.raises(errors.AreaCorrupt):
        crypto.verify_chunk(keys, cid, b"pagf")


def test_derived_keys_differ(keys: crypto.Keys) -> None:
    assert len({keys.data_key, keys.id_key, keys.enc_key}) == 3
    assert "redacted" in repr(keys)


def test_zip_bomb_is_refused(keys: crypto.Keys) -> None:
    bomb = bytes(8 << 20)
    blob = crypto.seal(keys, b"chunk", "z", bomb)
    assert len(blob) < 2000
    with pytest.raises(errors.AreaCorrupt):
        crypto.open_sealed(keys, b"chunk", "z", blob, max_plain=1 << 20)
    assert crypto.open_sealed(keys, b"chunk", "z", blob, max_plain=8 << 20) == bomb


def _seal_raw(keys: crypto.Keys, compressed: bytes, object_id: str) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    ct = AESGCM(keys.enc_key).encrypt(nonce, compressed, b"chunk:" + object_id.encode())
    return crypto.MAGIC + b"\x01" + nonce + ct


def test_frame_without_declared_size_is_bounded(keys: crypto.Keys) -> None:
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(4 << 20))
    with pytest.raises(errors.AreaCorrupt):
        crypto.open_sealed(keys, b"chunk", "u", _seal_raw(keys, frame, "u"), max_plain=1 << 20)


def test_trailing_frames_are_refused(keys: crypto.Keys) -> None:
    frame = zstandard.ZstdCompressor().compress(b"abc")
    with pytest.raises(errors.AreaCorrupt):
        crypto.open_sealed(keys, b"chunk", "t", _seal_raw(keys, frame + frame, "t"))
