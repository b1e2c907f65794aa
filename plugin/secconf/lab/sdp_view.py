"""Operator views of SDP bodies, with every key shown only as a fingerprint."""

from __future__ import annotations

from rich.table import Table

from ..core.errors import InvalidCryptoAttribute
from ..core.keys import key_fingerprint
from ..core.sdes import CryptoAttribute
from ..core.sdp import SessionDescription


def describe_crypto(value: str | None) -> str:
    """One line about an ``a=crypto`` value: tag, suite, key fingerprint(s), parameters."""
    try:
        attribute = CryptoAttribute.parse(value or "")
    except InvalidCryptoAttribute as exc:
        return f"invalid ({exc.status_code}): {exc.message}"
    keys = ", ".join(
        "key "
        + key_fingerprint(p.key, p.salt)
        + (f" lifetime {p.lifetime}" if p.lifetime is not None else "")
        + (f" MKI {p.mki}" if p.mki is not None else "")
        for p in attribute.key_params
    )
    params = " ".join(p.name for p in attribute.session_params)
    return f"tag {attribute.tag} {attribute.suite.name} {keys}" + (f" [{params}]" if params else "")


def describe_sdp(data: str | bytes) -> Table:
    """A table of the media sections of an SDP body; raises ``ProtocolError`` if malformed."""
    description = SessionDescription.parse(data)
    session_connection = description.session.connection
    table = Table(title=f"SDP: {len(description.media)} media section(s)")
    for column in ("#", "media", "port", "proto", "address", "crypto"):
        table.add_column(column)
    for index, section in enumerate(description.media):
        connection = section.connection or session_connection
        crypto = "\n".join(describe_crypto(v) for v in section.attributes("crypto")) or "-"
        table.add_row(
            str(index),
            section.media,
            str(section.port),
            section.proto,
            connection.address if connection else "-",
            crypto,
        )
    return table
