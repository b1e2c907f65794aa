"""The MIME around a protected body: the SIP headers outside, the MIME entity inside.

Outside (RFC 8551 §3.2.2, §3.4, §5.3; RFC 3261 §23.3's example of an S/MIME body)::

    Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m
    Content-Disposition: attachment; filename=smime.p7m; handling=required

and the body is the DER itself, binary, with no Content-Transfer-Encoding: SIP carries
binary bodies (RFC 3261 §7.4, and its own §23.3 example sends the CMS object
unencoded), S/MIME implementations "MUST be able to deal with binary MIME objects"
(RFC 8551 §3.1.2), and base64 would only add a third to every NOTIFY.  A received
Content-Transfer-Encoding other than ``binary`` is refused (415), not decoded.
``handling=required`` (RFC 3261 §20.11) makes a UA that cannot read the body refuse the
request rather than ignore the body.

Inside, the protected content is a MIME entity (RFC 8551 §3.4: id-data carries "a MIME
entity that is prepared as described in Section 3.1"; RFC 3261 §23.3 has
``Content-Type: application/sdp`` above the SDP): one ``Content-Type`` header, an empty
line, the body, binary (RFC 8551 §3.1.2: binary inside when the recipients are known to
handle it, here by prior agreement — both ends are secconf's).
"""

from __future__ import annotations

from ..errors import MalformedCms, UnsupportedMediaType
from ..sip.headers import parse_params

__all__ = [
    "CONTENT_DISPOSITION",
    "CONTENT_TYPE",
    "MEDIA_TYPE",
    "SMIME_TYPE",
    "check_content_type",
    "check_transfer_encoding",
    "inner_entity",
    "split_inner_entity",
]

MEDIA_TYPE = "application/pkcs7-mime"
SMIME_TYPE = "authEnveloped-data"  # RFC 8551 §5.3
#: The Content-Type header value of a protected body (RFC 8551 §3.4 sample, name= per §3.2.1).
CONTENT_TYPE = f"{MEDIA_TYPE}; smime-type={SMIME_TYPE}; name=smime.p7m"
#: The Content-Disposition header value (RFC 8551 §3.2.1; handling per RFC 3261 §20.11).
CONTENT_DISPOSITION = "attachment; filename=smime.p7m; handling=required"

_INNER_HEADER = b"Content-Type"
_MAX_INNER_HEADER_BYTES = 1024
_CRLF = b"\r\n"


def check_content_type(value: str) -> None:
    """Accept a Content-Type header value naming an authEnveloped-data S/MIME body.

    Media type, parameter names and the smime-type value compare case-insensitively
    (RFC 2045 §5.1); ``smime-type`` must be there (RFC 8551 §3.2.2 lets a sender leave
    it out, but ours always send it, and without it the body could be EnvelopedData).
    """
    media, _, rest = value.partition(";")
    if media.strip(" \t").lower() != MEDIA_TYPE:
        raise UnsupportedMediaType("the body is not application/pkcs7-mime")
    params = {name.lower(): param for name, param in parse_params(";" + rest if rest else "")}
    smime_type = (params.get("smime-type") or "").strip('"')
    if smime_type.lower() != SMIME_TYPE.lower():
        raise UnsupportedMediaType("the body's smime-type is not authEnveloped-data")


def check_transfer_encoding(value: str | None) -> None:
    """Accept an absent Content-Transfer-Encoding, or ``binary`` (RFC 2045 §6.1)."""
    if value is not None and value.strip(" \t").lower() != "binary":
        raise UnsupportedMediaType("a protected body is sent binary, never transfer-encoded")


def inner_entity(content_type: str, body: bytes) -> bytes:
    """The MIME entity to protect: ``Content-Type: <content_type>`` CRLF CRLF *body*."""
    header = content_type.encode("ascii")
    if not header or any(byte < 0x20 or byte > 0x7E for byte in header):
        raise ValueError("a Content-Type value is printable ASCII on one line")
    return _INNER_HEADER + b": " + header + _CRLF + _CRLF + body


def split_inner_entity(entity: bytes, media_type: str) -> bytes:
    """The body of an opened MIME entity whose Content-Type's media type is *media_type*.

    The entity must be exactly what :func:`inner_entity` builds: one Content-Type header
    (name case-insensitive, parameters allowed), an empty line, the body.  Anything else is
    :class:`MalformedCms`; another media type is :class:`UnsupportedMediaType`.
    """
    head, separator, body = entity.partition(_CRLF + _CRLF)
    if not separator or len(head) > _MAX_INNER_HEADER_BYTES:
        raise MalformedCms("the protected content is not a MIME entity")
    name, colon, value = head.partition(b":")
    if not colon or name.lower() != _INNER_HEADER.lower() or _CRLF in value:
        raise MalformedCms("the protected MIME entity has no single Content-Type header")
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedCms("the protected Content-Type is not ASCII") from None
    if text.partition(";")[0].strip(" \t").lower() != media_type.lower():
        raise UnsupportedMediaType("the protected content is not of the expected media type")
    return body
