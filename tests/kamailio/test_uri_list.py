"""RFC 5366 URI lists on create (SDES mode) through the real Kamailio, Redis and media edge.

The creator INVITEs the factory with a multipart/mixed body (the SDP offer and an
application/resource-lists+xml part); the mixer gets a plain application/sdp offer
and no ``Require: recipient-list-invite``; the list (plus the creator) is the
conference's allowed set.  Refusals leave Redis byte-identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from secconf.client.sip import SipRequestFailed, UserAgent
from secconf.store import generate_key_file
from secconf.store.keywrap import KeyWrapper, load_key_file
from tests.fixtures.edge_server import RunningEdge
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.ports import free_udp_port
from tests.fixtures.redis_server import RedisServer

from .conftest import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    Focus,
    Upstream,
    offer,
    pai,
    settings_text,
)

pytestmark = [pytest.mark.usefixtures("redis_url"), pytest.mark.slow]

BOUNDARY = "secconf-b1"
MULTIPART = f"multipart/mixed;boundary={BOUNDARY}"
REQUIRE = [("Require", "recipient-list-invite")]


def resource_list(*uris: str) -> bytes:
    entries = "".join(f'<entry uri="{uri}"/>' for uri in uris)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\r\n'
        '<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">\r\n'
        f"<list>{entries}</list>\r\n</resource-lists>\r\n"
    ).encode()


def multipart(sdp: bytes, xml: bytes) -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\n\r\n".encode()
        + sdp
        + f"\r\n--{BOUNDARY}\r\nContent-Type: application/resource-lists+xml\r\n"
        "Content-Disposition: recipient-list\r\n\r\n".encode()
        + xml
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def _start(
    factory: KamailioFactory, redis_server: RedisServer, edge: RunningEdge, tmp: Path, policy: str
) -> Focus:
    kek = tmp / "kek"
    generate_key_file(kek)
    text = settings_text(kek).replace("[policy]\n", f"[policy]\n{policy}\n")
    upstream_port = free_udp_port()
    server = factory.start(
        text,
        env={
            "SECCONF_REDIS_URL": redis_server.url,
            "SECCONF_UPSTREAM": f"sip:127.0.0.1:{upstream_port}",
            **edge.focus_env,
        },
    )
    return Focus(server, redis_server, upstream_port, KeyWrapper(load_key_file(kek), "test-kek"))


@pytest.fixture(scope="module")
def accepting_focus(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    media_edge: RunningEdge,
) -> Iterator[Focus]:
    """URI lists may name anyone (``uri_list_outside = "accept"``)."""
    running = _start(
        kamailio_factory, redis_server, media_edge, tmp_path_factory.mktemp("urilist-accept"),
        'uri_list_outside = "accept"\nuri_list_max = 4',
    )  # fmt: skip
    yield running
    running.server.stop()


@pytest.fixture(scope="module")
def no_list_focus(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    media_edge: RunningEdge,
) -> Iterator[Focus]:
    """URI lists switched off (``uri_list = false``)."""
    running = _start(
        kamailio_factory, redis_server, media_edge, tmp_path_factory.mktemp("urilist-off"),
        "uri_list = false",
    )  # fmt: skip
    yield running
    running.server.stop()


def _conference_id(header: str | None) -> str:
    assert header is not None
    assert header.startswith("<sip:conf-")
    return header[len("<sip:conf-") :].split("@", 1)[0]


def _create(focus: Focus, body: bytes, content_type: str = MULTIPART) -> tuple[str, Upstream]:
    upstream = Upstream(focus.upstream_port)

    async def scenario(upstream: Upstream) -> str:
        alice = await UserAgent.start("127.0.0.1", identity=ALICE)
        try:
            call = await alice.invite(
                focus.target("conf-factory"), body, content_type=content_type,
                extra_headers=pai(ALICE) + REQUIRE, timeout=5,
            )  # fmt: skip
            assert call.response is not None
            assert (call.response.get("Content-Type") or "").startswith("application/sdp")
            assert b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in call.remote_sdp
            assert b"resource-lists" not in call.remote_sdp
            return _conference_id(call.response.get("X-Secconf-Conference"))
        finally:
            await alice.close()

    return focus.run(scenario, upstream), upstream


def _join(focus: Focus, conference: str, identity: str, body: bytes | None = None,
          content_type: str = "application/sdp") -> int:  # fmt: skip
    async def scenario(upstream: Upstream) -> int:
        ua = await UserAgent.start("127.0.0.1", identity=identity)
        try:
            failure: SipRequestFailed | None = None
            try:
                await ua.invite(
                    focus.target(f"conf-{conference}"), body or offer(), content_type=content_type,
                    extra_headers=pai(identity), timeout=5,
                )  # fmt: skip
            except SipRequestFailed as exc:
                failure = exc
            if failure is None:
                return 200
            assert failure.response is not None
            assert focus.server.refusal(failure.response.get("Call-ID") or "")
            return failure.status_code
        finally:
            await ua.close()

    return focus.run(scenario)


def _refused(focus: Focus, body: bytes, content_type: str = MULTIPART) -> int:
    async def scenario(upstream: Upstream) -> int:
        alice = await UserAgent.start("127.0.0.1", identity=ALICE)
        try:
            with pytest.raises(SipRequestFailed) as info:
                await alice.invite(
                    focus.target("conf-factory"), body, content_type=content_type,
                    extra_headers=pai(ALICE) + REQUIRE, timeout=5,
                )  # fmt: skip
            assert upstream.invites == []
            assert info.value.response is not None
            assert focus.server.refusal(info.value.response.get("Call-ID") or "")  # type: ignore[union-attr]
            return info.value.status_code
        finally:
            await alice.close()

    return focus.run(scenario)


def test_create_with_a_uri_list_names_the_allowed_set(focus_real_edge: Focus) -> None:
    focus = focus_real_edge
    conference, upstream = _create(
        focus, multipart(offer(), resource_list("sip:bob@EXAMPLE.com:5060;transport=udp"))
    )
    # The mixer sees a plain SDP offer, clear RTP, no list, no Require it cannot meet.
    invite = upstream.invites[0].request
    assert (invite.get("Content-Type") or "").startswith("application/sdp")
    assert invite.body.startswith(b"v=0")
    assert b"resource-lists" not in invite.body
    assert BOUNDARY.encode() not in invite.body
    assert b"a=crypto" not in invite.body
    assert b"RTP/AVP" in invite.body
    assert invite.get("Require") is None
    store, client = focus.store()
    try:
        assert store.allowed(conference) == {ALICE, BOB}
    finally:
        client.close()
    assert _join(focus, conference, BOB) == 200
    # Carol is in policy.allowed but not on the creator's list.
    before = focus.snapshot()
    assert _join(focus, conference, CAROL) == 403
    assert focus.snapshot() == before


def test_uri_list_refusals_leave_state_untouched(focus_real_edge: Focus) -> None:
    focus = focus_real_edge
    sdp = offer()
    billion_laughs = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list>'
        b'<entry uri="sip:&c;@example.com"/></list></resource-lists>'
    )
    external = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list>'
        b'<entry uri="sip:&x;@example.com"/></list></resource-lists>'
    )
    cases = [
        (multipart(sdp, billion_laughs), MULTIPART, 400),
        (multipart(sdp, external), MULTIPART, 400),
        (multipart(sdp, b"<resource-lists"), MULTIPART, 400),
        (multipart(sdp, resource_list(BOB))[:-20], MULTIPART, 400),  # no close delimiter
        (multipart(sdp, resource_list(BOB)), "multipart/mixed;boundary=other", 400),
        (multipart(sdp, resource_list(BOB, DAVE)), MULTIPART, 403),  # Dave: outside policy
        (multipart(sdp, resource_list(*(f"sip:u{i}@example.com" for i in range(65)))),
         MULTIPART, 413),
        (multipart(sdp, resource_list(BOB) + b"<!--" + b"x" * 5000 + b"-->"), MULTIPART, 413),
        (multipart(offer(proto="RTP/AVP", crypto=[]), resource_list(BOB)), MULTIPART, 488),
    ]  # fmt: skip
    before = focus.snapshot()
    for body, content_type, status in cases:
        assert _refused(focus, body, content_type) == status, (status, body[-80:])
    assert focus.snapshot() == before


def test_a_uri_list_on_a_join_is_refused(focus_real_edge: Focus) -> None:
    focus = focus_real_edge
    conference, _ = _create(focus, offer(), "application/sdp")
    before = focus.snapshot()
    assert _join(focus, conference, BOB, multipart(offer(), resource_list(DAVE)), MULTIPART) == 403
    assert focus.snapshot() == before


def test_names_outside_policy_accepted_when_configured(accepting_focus: Focus) -> None:
    focus = accepting_focus
    conference, _ = _create(focus, multipart(offer(), resource_list(DAVE, ALICE)))
    store, client = focus.store()
    try:
        assert store.allowed(conference) == {ALICE, DAVE}
    finally:
        client.close()
    assert _join(focus, conference, DAVE) == 200
    assert _join(focus, conference, BOB) == 403  # in policy.allowed, not on the list
    before = focus.snapshot()
    five = resource_list(*(f"sip:u{i}@example.com" for i in range(5)))
    assert _refused(focus, multipart(offer(), five)) == 413  # uri_list_max = 4
    assert focus.snapshot() == before


def test_uri_lists_switched_off(no_list_focus: Focus) -> None:
    focus = no_list_focus
    before = focus.snapshot()
    assert _refused(focus, multipart(offer(), resource_list(BOB))) == 403
    assert focus.snapshot() == before
    # A plain offer still creates (the policy's allowed set).
    conference, _ = _create(focus, offer(), "application/sdp")
    store, client = focus.store()
    try:
        assert store.allowed(conference) == {ALICE, BOB, CAROL}
    finally:
        client.close()
