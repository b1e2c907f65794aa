"""secconf.lab.capture: tshark captures a protected NOTIFY on loopback and dissects it.

The body is made by secconf.core.cms; tshark (Wireshark's SIP and CMS dissectors, not
our code) must see a NOTIFY whose body is a CMS ContentInfo of type AuthEnvelopedData,
and the roster it carries must not appear anywhere in the captured bytes.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from secconf.core import cms
from secconf.core.cms import EventKey
from secconf.core.confinfo import CONFERENCE_INFO_TYPE, ConferenceInfo, User, full_document
from secconf.lab.capture import CaptureError, LoopbackCapture
from secconf.lab.services.process import free_port
from tests.fixtures.mikey_world import CountingRandom

#: RFC 5083 §1.1: id-ct-authEnvelopedData.
AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"


def _notify(port: int, body: bytes, content_type: str) -> bytes:
    head = "\r\n".join([
        f"NOTIFY sip:alice@127.0.0.1:{port} SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-capture",
        "From: <sip:conf-1@example.com>;tag=focus",
        "To: <sip:alice@example.com>;tag=alice",
        "Call-ID: capture-test",
        "CSeq: 7 NOTIFY",
        "Max-Forwards: 70",
        "Event: conference",
        "Subscription-State: active;expires=600",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "", "",
    ])  # fmt: skip
    return head.encode() + body


def test_tshark_sees_a_cms_body_and_no_roster(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    document = full_document(
        ConferenceInfo("sip:conf-1@example.com", users=(User("sip:bob@example.com"),)), 1
    )
    key = EventKey(cms.event_key_id(5), bytes(range(32)))
    body = cms.protect(
        cms.inner_entity(CONFERENCE_INFO_TYPE, document),
        kek=key.kek,
        kek_id=key.key_id,
        random_bytes=CountingRandom(),
    )
    path = tmp_path / "notify.pcapng"
    with LoopbackCapture(path, f"udp port {port}") as capture:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(_notify(port, body, cms.CONTENT_TYPE), ("127.0.0.1", port))
            sender.sendto(_notify(port, document, CONFERENCE_INFO_TYPE), ("127.0.0.1", port))
        time.sleep(0.2)
    rows = capture.fields('sip.Method == "NOTIFY"', ("sip.Content-Type", "cms.contentType"))
    assert [row["cms.contentType"] for row in rows] == [AUTH_ENVELOPED_DATA, ""]
    assert rows[0]["sip.Content-Type"].startswith("application/pkcs7-mime")
    captured = path.read_bytes()
    # The plain NOTIFY shows the roster to anyone on the path; the protected one does not.
    assert captured.count(b"sip:bob@example.com") == 1


def test_a_capture_that_cannot_start_says_why(tmp_path: Path) -> None:
    capture = LoopbackCapture(tmp_path / "x.pcapng", "this is not a filter", start_timeout=10)
    with pytest.raises(CaptureError, match="did not start"), capture:
        pass
