"""Unit tests for pullkv.crypto: sealing, associated data, key wrapping, master keys."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from pullkv.crypto import (
    KEY_BYTES,
    MASTER_KEY_ENV,
    MASTER_KEY_FILE,
    CryptoError,
    Keyring,
    decode_master_key,
    key_id_of,
    load_master_key,
    new_key,
    unwrap_key,
    wrap_key,
    write_secret_file,
)
from pullkv.sealing import Part, part_aad

NS1 = "a" * 32
NS2 = "b" * 32


@pytest.fixture
def keyring() -> Keyring:
    return Keyring({1: new_key()}, 1)


def test_new_key_is_random_256_bits() -> None:
    a, b = new_key(), new_key()
    assert len(a) == KEY_BYTES == 32
    assert a != b


@pytest.mark.parametrize("plaintext", [b"", b"value", bytes(range(256)), b"\x00" * 100_000])
def test_seal_open_round_trip(keyring: Keyring, plaintext: bytes) -> None:
    aad = part_aad(NS1, "key", "value")
    blob = keyring.seal(plaintext, aad)
    assert plaintext not in blob or plaintext == b""
    assert key_id_of(blob) == 1
    assert keyring.open(blob, aad) == plaintext


def test_sealing_is_randomised(keyring: Keyring) -> None:
    aad = part_aad(NS1, "key", "value")
    assert keyring.seal(b"same", aad) != keyring.seal(b"same", aad)


def test_aad_distinguishes_every_field() -> None:
    base = part_aad(NS1, "key", "value")
    assert base != part_aad(NS2, "key", "value")
    assert base != part_aad(NS1, "key2", "value")
    assert base != part_aad(NS1, "key", "metadata")
    assert part_aad(NS1, "€", "value").endswith("€".encode())


@pytest.mark.parametrize(
    "moved_to",
    [
        (NS1, "other-key", "value"),
        (NS2, "key", "value"),
        (NS1, "key", "metadata"),
        (NS1, "Key", "value"),
        (NS1, "key ", "value"),
    ],
)
def test_moved_ciphertext_fails(keyring: Keyring, moved_to: tuple[str, str, Part]) -> None:
    blob = keyring.seal(b"secret", part_aad(NS1, "key", "value"))
    with pytest.raises(CryptoError, match="tampered or moved"):
        keyring.open(blob, part_aad(*moved_to))


def test_tampering_any_byte_fails(keyring: Keyring) -> None:
    aad = part_aad(NS1, "key", "value")
    blob = keyring.seal(b"hello world", aad)
    for index in range(len(blob)):
        for flip in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[index] ^= flip
            with pytest.raises(CryptoError):
                keyring.open(bytes(tampered), aad)


def test_truncated_or_extended_ciphertext_fails(keyring: Keyring) -> None:
    aad = part_aad(NS1, "key", "value")
    blob = keyring.seal(b"hello", aad)
    for cut in range(len(blob)):
        with pytest.raises(CryptoError):
            keyring.open(blob[:cut], aad)
    with pytest.raises(CryptoError):
        keyring.open(blob + b"\x00", aad)


@pytest.mark.parametrize("blob", [b"", b"\x01", b"plain text that is long enough to parse" * 2])
def test_not_a_ciphertext(keyring: Keyring, blob: bytes) -> None:
    with pytest.raises(CryptoError):
        keyring.open(blob, b"")
    with pytest.raises(CryptoError, match="not a pullkv ciphertext"):
        key_id_of(blob)


def test_unknown_key_id(keyring: Keyring) -> None:
    other = Keyring({7: new_key()}, 7)
    aad = part_aad(NS1, "key", "value")
    blob = other.seal(b"x", aad)
    assert key_id_of(blob) == 7
    with pytest.raises(CryptoError, match="data key 7, which is not held"):
        keyring.open(blob, aad)


def test_same_id_different_key_fails() -> None:
    aad = part_aad(NS1, "key", "value")
    blob = Keyring({1: new_key()}, 1).seal(b"x", aad)
    with pytest.raises(CryptoError, match="tampered or moved"):
        Keyring({1: new_key()}, 1).open(blob, aad)


def test_rotation_keeps_old_ciphertext_readable() -> None:
    k1, k2 = new_key(), new_key()
    aad = part_aad(NS1, "key", "value")
    old = Keyring({1: k1}, 1).seal(b"old", aad)
    rotated = Keyring({1: k1, 2: k2}, 2)
    assert rotated.current_id == 2
    assert rotated.key_ids == [1, 2]
    assert rotated.has(1) and rotated.has(2) and not rotated.has(3)
    new = rotated.seal(b"new", aad)
    assert key_id_of(new) == 2
    assert rotated.open(old, aad) == b"old"
    assert rotated.open(new, aad) == b"new"


def test_current_key_must_be_held() -> None:
    with pytest.raises(CryptoError, match="current key 2"):
        Keyring({1: new_key()}, 2)


def test_wrap_unwrap_round_trip() -> None:
    master, data_key = new_key(), new_key()
    wrapped = wrap_key(master, 3, data_key)
    assert data_key not in wrapped
    assert unwrap_key(master, 3, wrapped) == data_key


def test_unwrap_with_wrong_master_key_fails_clearly() -> None:
    wrapped = wrap_key(new_key(), 1, new_key())
    with pytest.raises(CryptoError, match=r"data key 1 does not open with this master key.*"):
        unwrap_key(new_key(), 1, wrapped)


def test_unwrap_under_another_id_fails() -> None:
    master = new_key()
    wrapped = wrap_key(master, 1, new_key())
    with pytest.raises(CryptoError, match="data key 2"):
        unwrap_key(master, 2, wrapped)


def test_unwrap_tampered_fails() -> None:
    master = new_key()
    wrapped = bytearray(wrap_key(master, 1, new_key()))
    wrapped[-1] ^= 1
    with pytest.raises(CryptoError):
        unwrap_key(master, 1, bytes(wrapped))


@pytest.mark.parametrize("length", [0, 5, 12, 27])
def test_unwrap_truncated_is_a_crypto_error(length: int) -> None:
    master = new_key()
    wrapped = wrap_key(master, 1, new_key())[:length]
    with pytest.raises(CryptoError, match="data key 1"):
        unwrap_key(master, 1, wrapped)


# Master keys.
def test_decode_master_key() -> None:
    key = new_key()
    text = base64.b64encode(key).decode()
    assert decode_master_key(text) == key
    assert decode_master_key(f"  {text}\n") == key


@pytest.mark.parametrize("text", ["", "not base64!", "abc", "****"])
def test_decode_master_key_not_base64(text: str) -> None:
    with pytest.raises(CryptoError):
        decode_master_key(text)


@pytest.mark.parametrize("length", [16, 31, 33, 64])
def test_decode_master_key_wrong_length(length: int) -> None:
    text = base64.b64encode(b"k" * length).decode()
    with pytest.raises(CryptoError, match=f"must be 32 bytes, got {length}"):
        decode_master_key(text)


def test_decode_master_key_rejects_urlsafe_alphabet() -> None:
    key = b"\xff" * 32  # standard base64 has "/" here
    text = base64.urlsafe_b64encode(key).decode()
    assert "_" in text
    with pytest.raises(CryptoError, match="not valid base64"):
        decode_master_key(text)


def test_load_master_key_creates_a_0600_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key, source = load_master_key(data, {}, create=True)
    path = data / MASTER_KEY_FILE
    assert len(key) == 32
    assert source == f"{path} (created)"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert decode_master_key(path.read_text()) == key
    again, source2 = load_master_key(data, {}, create=True)
    assert again == key
    assert source2 == str(path)
    assert load_master_key(data, {}, create=False) == (key, str(path))


def test_load_master_key_without_create(tmp_path: Path) -> None:
    with pytest.raises(CryptoError, match=MASTER_KEY_ENV):
        load_master_key(tmp_path, {}, create=False)
    assert not (tmp_path / MASTER_KEY_FILE).exists()


def test_load_master_key_reads_env_first(tmp_path: Path) -> None:
    load_master_key(tmp_path, {}, create=True)  # a key file exists too
    env_key = new_key()
    environ = {MASTER_KEY_ENV: base64.b64encode(env_key).decode()}
    assert load_master_key(tmp_path, environ, create=True) == (env_key, f"${MASTER_KEY_ENV}")
    assert load_master_key(tmp_path / "elsewhere", environ, create=False)[0] == env_key
    assert not (tmp_path / "elsewhere").exists()


def test_load_master_key_empty_env_falls_back_to_file(tmp_path: Path) -> None:
    key, _ = load_master_key(tmp_path, {}, create=True)
    assert load_master_key(tmp_path, {MASTER_KEY_ENV: ""}, create=False)[0] == key


def test_load_master_key_bad_env_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CryptoError):
        load_master_key(tmp_path, {MASTER_KEY_ENV: "short"}, create=True)
    assert not (tmp_path / MASTER_KEY_FILE).exists()


def test_load_master_key_bad_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / MASTER_KEY_FILE).write_text("garbage\n")
    with pytest.raises(CryptoError):
        load_master_key(tmp_path, {}, create=True)
    assert (tmp_path / MASTER_KEY_FILE).read_text() == "garbage\n"  # never overwritten


def test_write_secret_file_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret"
    write_secret_file(path, "one")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_secret_file(path, "two")
    assert path.read_text() == "one"


def test_empty_master_key_file_is_refused_without_create(tmp_path: Path) -> None:
    (tmp_path / MASTER_KEY_FILE).write_text("")
    with pytest.raises(CryptoError, match=r"is empty .*restore master.key"):
        load_master_key(tmp_path, {}, create=False)
    assert (tmp_path / MASTER_KEY_FILE).read_text() == ""  # left for the operator to see


def test_empty_master_key_file_is_replaced_when_nothing_uses_it(tmp_path: Path) -> None:
    # create=True is only passed for a store without data keys: nothing was sealed yet.
    (tmp_path / MASTER_KEY_FILE).write_text("")
    key, source = load_master_key(tmp_path, {}, create=True)
    assert source.endswith("(created)")
    assert decode_master_key((tmp_path / MASTER_KEY_FILE).read_text()) == key
