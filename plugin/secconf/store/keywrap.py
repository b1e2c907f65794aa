"""Key material at rest: AES-256-GCM wrapping under a key-encryption key (KEK).

Every secret the store keeps in Redis (users' pre-shared keys, later group-key
epochs) is wrapped here first, so that a copy of the Redis data (a dump, a
replica, ``MONITOR``, a backup) holds nothing usable without the KEK, which
lives in a file on the KMS host only.

Blob format, version 1 (all lengths in bytes)::

    +---------+--------+-----------------+----------+--------------------------+
    | version | id_len | kek_id          | nonce    | ciphertext || GCM tag    |
    | 1: 0x01 | 1      | id_len (ASCII)  | 12       | len(secret) + 16         |
    +---------+--------+-----------------+----------+--------------------------+

    AAD = version || id_len || kek_id || context

The header names the KEK so that a blob says which key opens it (rotation: a
later reader can keep several wrappers and pick by id).  The *context* is not
stored: the caller passes the name of the record the blob belongs to (e.g.
``b"user-psk:sip:alice@example.com"``), so a blob copied into another record, or
unwrapped under another KEK, fails authentication (NIST SP 800-38D §5.2.1.2:
the AAD is authenticated, not encrypted).  The nonce is 96 random bits from
``os.urandom``; with one KEK wrapping far fewer than 2**32 secrets the
collision bound of SP 800-38D §8.3 holds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secconf.config_files import parse_key32, read_private_file

from .errors import KeyFileError, KeyUnwrapError

__all__ = [
    "KEK_LENGTH",
    "VERSION",
    "KeyWrapper",
    "generate_key_file",
    "load_key_file",
]

KEK_LENGTH: Final = 32
VERSION: Final = 1
NONCE_LENGTH: Final = 12
TAG_LENGTH: Final = 16
MAX_KEK_ID_LENGTH: Final = 64
_MAX_KEK_FILE_SIZE: Final = 4096


def _check_kek_id(kek_id: object) -> bytes:
    if (
        not isinstance(kek_id, str)
        or not 0 < len(kek_id) <= MAX_KEK_ID_LENGTH
        or not kek_id.isascii()
        or not kek_id.isprintable()
        or kek_id != kek_id.strip()
    ):
        raise ValueError(
            f"kek_id must be 1 to {MAX_KEK_ID_LENGTH} printable ASCII characters "
            "without surrounding spaces"
        )
    return kek_id.encode("ascii")


class KeyWrapper:
    """Wraps and unwraps secrets under one 256-bit KEK named *kek_id*.

    The KEK is never shown: ``repr()`` gives the id only.
    """

    __slots__ = ("_aead", "_header", "_kek_id")

    def __init__(self, kek: bytes, kek_id: str) -> None:
        if not isinstance(kek, bytes | bytearray) or len(kek) != KEK_LENGTH:
            # The length is not secret; the bytes are never quoted.
            raise ValueError(f"the KEK must be {KEK_LENGTH} bytes")
        encoded_id = _check_kek_id(kek_id)
        self._kek_id = kek_id
        self._aead = AESGCM(bytes(kek))
        self._header = bytes([VERSION, len(encoded_id)]) + encoded_id

    @property
    def kek_id(self) -> str:
        """The name of the KEK, written in every blob's header."""
        return self._kek_id

    def __repr__(self) -> str:
        return f"KeyWrapper(kek_id={self._kek_id!r})"

    def __reduce__(self) -> NoReturn:
        # Pickling would copy the KEK into whatever stores the pickle.
        raise TypeError("KeyWrapper cannot be pickled")

    def wrap(self, secret: bytes, context: bytes) -> bytes:
        """Return *secret* encrypted and authenticated, bound to *context*.

        *context* names the record the blob is stored in; the same context must
        be passed to :meth:`unwrap`.  Each call uses a fresh random nonce, so
        wrapping one secret twice gives two different blobs.
        """
        if not isinstance(secret, bytes | bytearray) or not secret:
            raise ValueError("the secret must be non-empty bytes")
        if not isinstance(context, bytes | bytearray):
            raise TypeError("the context must be bytes")
        nonce = os.urandom(NONCE_LENGTH)
        sealed = self._aead.encrypt(nonce, bytes(secret), self._header + bytes(context))
        return self._header + nonce + sealed

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        """Return the secret in *blob*, or raise :class:`KeyUnwrapError`.

        Fails when the blob is not version 1, names another KEK, was wrapped for
        another *context*, or was altered in any bit.
        """
        if not isinstance(blob, bytes | bytearray):
            raise KeyUnwrapError("wrapped key: not bytes")
        if not isinstance(context, bytes | bytearray):
            raise TypeError("the context must be bytes")
        blob = bytes(blob)
        if len(blob) < 2:
            raise KeyUnwrapError("wrapped key: truncated header")
        if blob[0] != VERSION:
            raise KeyUnwrapError(f"wrapped key: unsupported format version {blob[0]}")
        header_length = 2 + blob[1]
        if blob[:header_length] != self._header:
            # Also catches a changed id length: the header is compared whole.
            raise KeyUnwrapError(
                f"wrapped key: not wrapped under KEK {self._kek_id!r} (wrong KEK or altered header)"
            )
        body = blob[header_length:]
        if len(body) < NONCE_LENGTH + TAG_LENGTH + 1:
            raise KeyUnwrapError("wrapped key: truncated")
        nonce, sealed = body[:NONCE_LENGTH], body[NONCE_LENGTH:]
        try:
            return self._aead.decrypt(nonce, sealed, self._header + bytes(context))
        except InvalidTag:
            raise KeyUnwrapError(
                "wrapped key: authentication failed (wrong KEK, wrong record, or altered)"
            ) from None


def load_key_file(path: str | os.PathLike[str], what: str = "KEK") -> bytes:
    """Read a 32-byte key (a KEK, a PSK) from *path*: raw bytes, 64 hex digits, or base64.

    Refuses a file that group or others may read or write (like ssh does for
    private keys), and a file that is not a regular file.  Errors name the path
    and the problem, never the file's content.
    """
    file = Path(path)
    data = read_private_file(file, what=what, max_bytes=_MAX_KEK_FILE_SIZE, error=KeyFileError)
    kek = parse_key32(data)
    if kek is None:
        raise KeyFileError(
            f"{what} file {str(file)!r} does not hold a {KEK_LENGTH}-byte key "
            f"(expected {KEK_LENGTH} raw bytes, {2 * KEK_LENGTH} hex digits, or base64)"
        )
    return kek


def generate_key_file(path: str | os.PathLike[str], what: str = "KEK") -> bytes:
    """Write a fresh random 32-byte key to *path* as 64 hex digits, mode 0600; return it.

    Refuses to overwrite an existing file: losing a KEK loses every secret
    wrapped under it.
    """
    file = Path(path)
    kek = os.urandom(KEK_LENGTH)
    try:
        descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{what} file {str(file)!r} already exists; not overwritten") from None
    except OSError as exc:
        raise KeyFileError(f"{what} file {str(file)!r} cannot be created: {exc.strerror}") from None
    try:
        os.fchmod(descriptor, 0o600)  # the umask may have narrowed it; never widen
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            descriptor = -1
            handle.write(kek.hex() + "\n")
    except BaseException:
        if descriptor >= 0:
            os.close(descriptor)
        file.unlink(missing_ok=True)
        raise
    return kek
