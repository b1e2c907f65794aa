"""CMS AuthEnvelopedData with AES-GCM and one KEK recipient (RFC 5083, RFC 5084, RFC 5652 §6.2.3).

The protection of conference event NOTIFY bodies in KMS mode (docs/event-protection.md).
What goes on the wire, as ASN.1 (every structure is pyasn1-modules', never DER by hand)::

    ContentInfo {                                     RFC 5652 §3
      contentType  id-ct-authEnvelopedData            RFC 5083 §2.1 (1.2.840.113549.1.9.16.1.23)
      content [0] AuthEnvelopedData {
        version 0                                     RFC 5083 §2.1: "MUST be set to 0"
        recipientInfos { kekri [2] KEKRecipientInfo { RFC 5652 §6.2.3
            version 4                                 "always set to 4"
            kekid { keyIdentifier  <kek_id> }         no date, no other
            keyEncryptionAlgorithm id-aes128-wrap | id-aes256-wrap, parameters absent
                                                      (RFC 3565 §2.3.2; by the KEK's length)
            encryptedKey  AES key wrap of the CEK     RFC 3394 §2.2.1 (default IV A6A6...)
        } }
        authEncryptedContentInfo {
          contentType id-data                         RFC 8551 §3.4: a MIME entity inside
          contentEncryptionAlgorithm id-aes128-GCM | id-aes256-GCM   RFC 5084 §3.2
            GCMParameters { aes-nonce 12 octets, aes-ICVlen 16 }
          encryptedContent [0] <ciphertext, as long as the content>
        }
        mac  <the 16-octet GCM tag>                   RFC 5083 §2.1, RFC 5084 §3.2
      } }

No authAttrs: RFC 5083 §2.1 requires them only for a content type other than id-data,
and the GCM AAD is then empty ("zero bits", §2.2).  No unauthAttrs, no originatorInfo.
A fresh CEK and nonce for every message: the CEK is as long as the KEK (AES-128-GCM
under a 128-bit KEK, AES-256-GCM under a 256-bit one).

Opening refuses anything else with a specific error from :mod:`secconf.core.errors`
and returns plaintext only once the GCM tag has verified (RFC 5083 §2: "MUST verify
the integrity ... before releasing any information"); ``cryptography``'s AESGCM
compares the tag in constant time and returns nothing on failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_modules import rfc3565, rfc5083, rfc5084, rfc5652

from ..errors import (
    CmsAuthenticationFailed,
    CmsTooLarge,
    MalformedCms,
    UnknownKeyId,
    UnsupportedCms,
)
from ..mikey.ticket import RandomBytes

__all__ = [
    "GCM_NONCE_BYTES",
    "GCM_TAG_BYTES",
    "KEK_ID_MAX_BYTES",
    "MAX_PROTECTED_BYTES",
    "KekLookup",
    "open_protected",
    "protect",
]

#: A protected body travels in one SIP message, which secconf caps at 64 KiB
#: (secconf.core.sip.message.MAX_MESSAGE_BYTES): nothing longer is decoded.
MAX_PROTECTED_BYTES = 64 * 1024
#: RFC 5084 §3.2: "A length of 12 octets is RECOMMENDED"; the only length accepted.
GCM_NONCE_BYTES = 12
#: RFC 5084 §3.2 allows 12..16; only the full 16-octet tag is sent or accepted.
GCM_TAG_BYTES = 16
#: The KEK identifier is an OCTET STRING of any length (RFC 5652 §6.2.3); ours are short.
KEK_ID_MAX_BYTES = 64
#: Recipient infos looked at in one message (ours send one; other senders may add more).
_MAX_RECIPIENTS = 8

#: ``kek_for(key_id)`` returns the KEK that *key_id* names, or None when it names none.
KekLookup = Callable[[bytes], bytes | None]

# KEK length -> key-wrap algorithm (RFC 3565 §2.3.2), CEK length -> GCM algorithm (RFC 5084 §3.2).
_WRAP_FOR_KEK = {16: rfc3565.id_aes128_wrap, 32: rfc3565.id_aes256_wrap}
_GCM_FOR_CEK = {16: rfc5084.id_aes128_GCM, 32: rfc5084.id_aes256_GCM}
_CEK_FOR_GCM = {oid: size for size, oid in _GCM_FOR_CEK.items()}
_KEK_FOR_WRAP = {oid: size for size, oid in _WRAP_FOR_KEK.items()}

_AUTH_ENVELOPED_DATA_VERSION = 0  # RFC 5083 §2.1
_KEKRI_VERSION = 4  # RFC 5652 §6.2.3


# -- Protecting -------------------------------------------------------------------------------


def protect(content: bytes, *, kek: bytes, kek_id: bytes, random_bytes: RandomBytes) -> bytes:
    """The DER of a ContentInfo holding *content* as AuthEnvelopedData for one KEK recipient.

    *content* is the MIME entity to protect (:func:`secconf.core.cms.mime.inner_entity`);
    *kek* 16 or 32 bytes; *kek_id* the identifier the recipient looks the KEK up by
    (1..64 bytes).  *random_bytes* supplies the CEK and the nonce.  Raises ``ValueError``
    for a bad KEK or key id (a caller's mistake) and :class:`CmsTooLarge` when the
    result would not fit :data:`MAX_PROTECTED_BYTES`.
    """
    if len(kek) not in _WRAP_FOR_KEK:
        raise ValueError("a KEK is 16 or 32 bytes")
    if not 1 <= len(kek_id) <= KEK_ID_MAX_BYTES:
        raise ValueError(f"a KEK identifier is 1..{KEK_ID_MAX_BYTES} bytes")
    if len(content) > MAX_PROTECTED_BYTES:
        raise CmsTooLarge(f"content over {MAX_PROTECTED_BYTES} bytes")
    cek = _draw(random_bytes, len(kek))
    nonce = _draw(random_bytes, GCM_NONCE_BYTES)
    # RFC 5083 §2.2: no authAttrs, so the AAD is empty; AESGCM appends the tag.
    sealed = AESGCM(cek).encrypt(nonce, content, None)
    ciphertext, tag = sealed[:-GCM_TAG_BYTES], sealed[-GCM_TAG_BYTES:]

    envelope = rfc5083.AuthEnvelopedData()
    envelope["version"] = _AUTH_ENVELOPED_DATA_VERSION
    recipient = rfc5652.RecipientInfo()
    kekri = recipient["kekri"]
    kekri["version"] = _KEKRI_VERSION
    kekri["kekid"]["keyIdentifier"] = kek_id
    kekri["keyEncryptionAlgorithm"]["algorithm"] = _WRAP_FOR_KEK[len(kek)]
    kekri["encryptedKey"] = aes_key_wrap(kek, cek)  # RFC 3394 §2.2.1
    envelope["recipientInfos"].append(recipient)

    content_info = envelope["authEncryptedContentInfo"]
    content_info["contentType"] = rfc5652.id_data
    algorithm = content_info["contentEncryptionAlgorithm"]
    algorithm["algorithm"] = _GCM_FOR_CEK[len(cek)]
    parameters = rfc5084.GCMParameters()
    parameters["aes-nonce"] = nonce
    parameters["aes-ICVlen"] = GCM_TAG_BYTES
    algorithm["parameters"] = encoder.encode(parameters)
    content_info["encryptedContent"] = ciphertext
    envelope["mac"] = tag

    outer = rfc5652.ContentInfo()
    outer["contentType"] = rfc5083.id_ct_authEnvelopedData
    outer["content"] = encoder.encode(envelope)
    der: bytes = encoder.encode(outer)
    if len(der) > MAX_PROTECTED_BYTES:
        raise CmsTooLarge(f"protected body over {MAX_PROTECTED_BYTES} bytes")
    return der


def _draw(random_bytes: RandomBytes, count: int) -> bytes:
    drawn = random_bytes(count)
    if len(drawn) != count:
        raise ValueError("random source returned too few bytes")
    return drawn


# -- Opening ----------------------------------------------------------------------------------


def open_protected(der: bytes, kek_for: KekLookup) -> bytes:
    """The content of a body :func:`protect` (or any sender of the same profile) made.

    *kek_for* maps a KEK identifier to its KEK (or None).  Raises :class:`CmsTooLarge`,
    :class:`MalformedCms` (not DER, trailing bytes, wrong shape), :class:`UnsupportedCms`
    (another content type, version, algorithm, parameter or option),
    :class:`UnknownKeyId` (no KEK recipient whose identifier *kek_for* knows) or
    :class:`CmsAuthenticationFailed` (key unwrap or tag failure).
    """
    if len(der) > MAX_PROTECTED_BYTES:
        raise CmsTooLarge(f"protected body over {MAX_PROTECTED_BYTES} bytes")
    outer = _decode(der, rfc5652.ContentInfo(), "ContentInfo")
    if outer["contentType"] != rfc5083.id_ct_authEnvelopedData:
        # Also refuses EnvelopedData: no downgrade to encryption without integrity.
        raise UnsupportedCms("the body is not CMS AuthEnvelopedData")
    envelope = _decode(bytes(outer["content"]), rfc5083.AuthEnvelopedData(), "AuthEnvelopedData")
    _check_envelope(envelope)
    cek = _unwrap_cek(envelope["recipientInfos"], kek_for)
    return _decrypt_content(envelope, cek)


def _decode(data: bytes, spec: Any, what: str) -> Any:
    """*data* decoded as *spec*, refused unless it is exactly the DER of what it decodes to.

    pyasn1's DER decoder refuses indefinite lengths but lets other BER through (long-form
    lengths, an empty INTEGER, a primitive explicit tag); DER is canonical (X.690 §10), so
    encoding the value again must give back the very bytes, or the input was not DER.
    The encoding runs on a second decoding: pyasn1's encoder fills in absent OPTIONAL
    fields of what it walks, which the profile checks must still see as absent.
    """
    try:
        value, rest = decoder.decode(data, asn1Spec=spec)
        canonical = rest or encoder.encode(decoder.decode(data, asn1Spec=spec)[0]) == data
    except (PyAsn1Error, ValueError, TypeError):
        # pyasn1's message quotes the input: only the field name goes out.
        raise MalformedCms(f"{what} is not valid DER") from None
    if rest:
        raise MalformedCms(f"{len(rest)} bytes after the {what}")
    if not canonical:
        raise MalformedCms(f"{what} is BER, not DER")
    return value


def _present(sequence: Any, name: str) -> bool:
    # instantiate=False: reading an absent OPTIONAL field must not create it (pyasn1 would).
    return sequence.getComponentByName(name, instantiate=False) is not univ.noValue


def _check_envelope(envelope: Any) -> None:
    if int(envelope["version"]) != _AUTH_ENVELOPED_DATA_VERSION:
        raise UnsupportedCms(f"AuthEnvelopedData version {int(envelope['version'])} is not 0")
    for field in ("originatorInfo", "authAttrs", "unauthAttrs"):
        if _present(envelope, field):
            raise UnsupportedCms(f"AuthEnvelopedData {field} is not in the profile")
    content_info = envelope["authEncryptedContentInfo"]
    if content_info["contentType"] != rfc5652.id_data:
        raise UnsupportedCms("the protected content type is not id-data")
    if not _present(content_info, "encryptedContent"):
        raise UnsupportedCms("detached encrypted content is not in the profile")


def _unwrap_cek(recipients: Any, kek_for: KekLookup) -> bytes:
    if not 1 <= len(recipients) <= _MAX_RECIPIENTS:
        raise MalformedCms(f"{len(recipients)} recipient infos (1..{_MAX_RECIPIENTS} accepted)")
    for recipient in recipients:
        if recipient.getName() != "kekri":
            continue  # another kind of recipient: not ours to open
        kekri = recipient["kekri"]
        kek = kek_for(bytes(kekri["kekid"]["keyIdentifier"]))
        if kek is None:
            continue
        return _unwrap_one(kekri, kek)
    raise UnknownKeyId("no KEK recipient names a key identifier known here")


def _unwrap_one(kekri: Any, kek: bytes) -> bytes:
    if int(kekri["version"]) != _KEKRI_VERSION:
        raise UnsupportedCms(f"KEKRecipientInfo version {int(kekri['version'])} is not 4")
    kekid = kekri["kekid"]
    if _present(kekid, "date") or _present(kekid, "other"):
        raise UnsupportedCms("a KEK identifier with date or other is not in the profile")
    wrap = kekri["keyEncryptionAlgorithm"]
    wrap_oid = wrap["algorithm"]
    if wrap_oid not in _KEK_FOR_WRAP:
        raise UnsupportedCms("key-encryption algorithm is not AES-128 or AES-256 key wrap")
    if _present(wrap, "parameters"):
        raise UnsupportedCms("AES key wrap takes no parameters (RFC 3565 §2.3.2)")
    if len(kek) != _KEK_FOR_WRAP[wrap_oid]:
        raise UnsupportedCms("the key-wrap algorithm does not match the KEK's length")
    try:
        return aes_key_unwrap(kek, bytes(kekri["encryptedKey"]))
    except (InvalidUnwrap, ValueError):
        raise CmsAuthenticationFailed("the content-encryption key does not unwrap") from None


def _decrypt_content(envelope: Any, cek: bytes) -> bytes:
    content_info = envelope["authEncryptedContentInfo"]
    algorithm = content_info["contentEncryptionAlgorithm"]
    gcm_oid = algorithm["algorithm"]
    if gcm_oid not in _CEK_FOR_GCM:
        raise UnsupportedCms("content encryption is not AES-128-GCM or AES-256-GCM")
    if len(cek) != _CEK_FOR_GCM[gcm_oid]:
        raise UnsupportedCms("the content-encryption key does not fit the GCM algorithm")
    if not _present(algorithm, "parameters"):
        raise MalformedCms("AES-GCM without GCMParameters (RFC 5084 §3.2)")
    parameters = _decode(bytes(algorithm["parameters"]), rfc5084.GCMParameters(), "GCMParameters")
    nonce = bytes(parameters["aes-nonce"])
    if len(nonce) != GCM_NONCE_BYTES:
        raise UnsupportedCms(f"a GCM nonce of {len(nonce)} octets (only 12 accepted)")
    if int(parameters["aes-ICVlen"]) != GCM_TAG_BYTES:
        raise UnsupportedCms(f"a GCM tag of {int(parameters['aes-ICVlen'])} octets (only 16)")
    tag = bytes(envelope["mac"])
    if len(tag) != GCM_TAG_BYTES:
        raise MalformedCms("the mac is not as long as aes-ICVlen says")
    ciphertext = bytes(content_info["encryptedContent"])
    try:
        # RFC 5083 §2.2: authAttrs absent, so zero bits of AAD.
        return AESGCM(cek).decrypt(nonce, ciphertext + tag, None)
    except InvalidTag:
        raise CmsAuthenticationFailed("the AES-GCM tag does not verify") from None
