"""The participant's NOTIFY reader and event keyring, without sockets.

:func:`read_notify` is where every refusal gets its status; the network tests
(tests/client/test_conference_watch.py) drive it through a real user agent, these pin
the cases a user agent cannot easily produce (a plain body outside TLS in SDES mode)
and the keyring's rules, with a key derived over a real MIKEY-TICKET exchange.
"""

from __future__ import annotations

import pytest

from secconf.client.conference_events import (
    EventKeyring,
    KmsSubscription,
    NotifyContent,
    Protection,
    SubState,
    parse_subscription_state,
    read_notify,
)
from secconf.core import cms
from secconf.core.cms import EventKey, event_key_id
from secconf.core.confinfo import (
    CONFERENCE_INFO_TYPE,
    ConferenceInfo,
    ConferenceView,
    User,
    Verdict,
    full_document,
)
from secconf.core.errors import (
    BadEvent,
    BadSubscriptionState,
    CallDoesNotExist,
    ProtocolError,
    UnknownKeyId,
    UnprotectedNotification,
)
from secconf.core.mikey import ticket as mt
from secconf.core.sip.builders import build_request
from secconf.core.sip.headers import Address, Via
from secconf.core.sip.message import SipRequest
from tests.fixtures.mikey_world import (
    FOCUS,
    NOW,
    CountingRandom,
    Kms,
    _desired,
    _issue,
    _respond,
    _transfer,
)

CONFERENCE = "sips:conf-7@focus.example.com"
INFO = ConferenceInfo(CONFERENCE, users=(User("sip:alice@example.com"),))
KEY = EventKey(event_key_id(7), bytes(range(32)))


def _notify(
    body: bytes,
    content_type: str | None,
    *,
    event: str = "conference",
    state: str | None = "active;expires=600",
) -> SipRequest:
    headers = [("Event", event)]
    if state is not None:
        headers.append(("Subscription-State", state))
    return build_request(
        "NOTIFY",
        "sip:alice@127.0.0.1:5070;transport=tls",
        from_=Address("sip:conf-7@example.com").with_tag("f1"),
        to=Address("sip:alice@example.com").with_tag("a1"),
        call_id="c1",
        cseq=2,
        via=Via.parse("SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtest"),
        body=body,
        content_type=content_type,
        extra_headers=headers,
    )


def _protected(key: EventKey = KEY) -> bytes:
    entity = cms.inner_entity(CONFERENCE_INFO_TYPE, full_document(INFO, 1))
    return cms.protect(entity, kek=key.kek, kek_id=key.key_id, random_bytes=CountingRandom())


def _read(
    request: SipRequest,
    protection: Protection,
    *,
    over_tls: bool = True,
    keyring: EventKeyring | None = None,
) -> NotifyContent:
    ring = keyring or EventKeyring()
    return read_notify(
        request, None, protection=protection, over_tls=over_tls, kek_for=ring.kek_for
    )


def _ring(*keys: EventKey) -> EventKeyring:
    ring = EventKeyring()
    for key in keys:
        ring.install(key)
    return ring


# -- Subscription-State and Event -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("active;expires=600", (SubState.ACTIVE, 600, None)),
        ("Active ; Expires=30", (SubState.ACTIVE, 30, None)),
        ("pending", (SubState.PENDING, None, None)),
        ("terminated;reason=noresource;expires=5", (SubState.TERMINATED, None, "noresource")),
        ("terminated;reason=Timeout", (SubState.TERMINATED, None, "timeout")),
    ],
)
def test_subscription_state_is_read(value: str, expected: tuple[object, ...]) -> None:
    state = parse_subscription_state(value)
    assert (state.state, state.expires, state.reason) == expected


@pytest.mark.parametrize(
    "value", [None, "", "sleepy", "active;expires=soon", "active;expires=-1", "active;expires=99999999999"]
)  # fmt: skip
def test_a_bad_subscription_state_is_400(value: str | None) -> None:
    with pytest.raises(BadSubscriptionState) as info:
        parse_subscription_state(value)
    assert info.value.status_code == 400


def test_event_must_be_conference_without_id() -> None:
    body = full_document(INFO, 1)
    for event, error, status in [
        ("presence", BadEvent, 489),
        ("Conference", BadEvent, 489),  # RFC 6665 §8.2.1: tokens compare exactly
        ("conference;id=7", CallDoesNotExist, 481),
    ]:
        with pytest.raises(error) as info:
            _read(_notify(body, CONFERENCE_INFO_TYPE, event=event), Protection.SDES)
        assert info.value.status_code == status
    read = _read(_notify(body, CONFERENCE_INFO_TYPE, event="conference;foo=bar"), Protection.SDES)
    assert read.received is not None


def test_no_body_is_only_a_state() -> None:
    read = _read(_notify(b"", None, state="pending"), Protection.KMS)
    assert read.state.state is SubState.PENDING
    assert read.received is None


# -- protection ---------------------------------------------------------------------------


def test_sdes_takes_plain_xml_over_tls_only() -> None:
    request = _notify(full_document(INFO, 1), CONFERENCE_INFO_TYPE)
    read = _read(request, Protection.SDES, over_tls=True)
    assert read.received is not None
    assert read.received.verdict is Verdict.APPLIED
    with pytest.raises(UnprotectedNotification) as info:
        _read(request, Protection.SDES, over_tls=False)
    assert info.value.status_code == 403


def test_kms_opens_with_the_keyring_and_refuses_a_key_not_held() -> None:
    request = _notify(_protected(), cms.CONTENT_TYPE)
    read = _read(request, Protection.KMS, keyring=_ring(KEY))
    assert read.received is not None
    assert read.received.view == ConferenceView(1, INFO)
    with pytest.raises(UnknownKeyId) as info:
        _read(request, Protection.KMS, keyring=_ring(EventKey(event_key_id(8), KEY.kek)))
    assert info.value.status_code == 493
    with pytest.raises(UnprotectedNotification):
        _read(_notify(full_document(INFO, 1), CONFERENCE_INFO_TYPE), Protection.KMS, over_tls=True)


def test_a_refusal_leaves_the_held_view_alone() -> None:
    held = ConferenceView(1, INFO)
    request = _notify(_protected(), cms.CONTENT_TYPE)
    with pytest.raises(ProtocolError):
        read_notify(request, held, protection=Protection.KMS, over_tls=True, kek_for=lambda _: None)
    assert held == ConferenceView(1, INFO)  # frozen; nothing else to change


# -- the keyring ------------------------------------------------------------------------------


def test_keyring_keeps_the_newest_keys_and_refuses_other_identifiers() -> None:
    keys = [EventKey(event_key_id(csb), bytes([csb]) * 32) for csb in (2, 3, 4)]
    ring = EventKeyring(keep=2)
    for key in keys:
        ring.install(key)
    assert len(ring) == 2
    assert ring.kek_for(keys[0].key_id) is None  # the oldest: dropped
    assert ring.kek_for(keys[2].key_id) == keys[2].kek
    ring.install(keys[1])  # installed again: the newest now
    ring.install(keys[0])
    assert ring.kek_for(keys[1].key_id) == keys[1].kek
    assert ring.kek_for(keys[2].key_id) is None
    ring.drop(keys[1].key_id)
    assert ring.kek_for(keys[1].key_id) is None
    with pytest.raises(ValueError, match="identifier"):
        ring.install(EventKey(b"\x01" + bytes(8), bytes(32)))  # the retired group form
    assert all(key.kek.hex() not in repr(ring) for key in keys)


def test_a_member_key_from_its_subscribe_exchange_opens_the_focus_body() -> None:
    kms = Kms(CountingRandom(b"kms"))
    issued = _issue(kms, _desired(recipients=(FOCUS,), forking=False))
    subscription = KmsSubscription(_transfer(issued, FOCUS), lambda: NOW)
    answer = _respond(kms, subscription.pending.data, FOCUS)
    at_focus = cms.event_key_of_transfer(
        mt.TransferInit.read(subscription.pending.data), answer.resolved
    )
    early = subscription.early_key()
    assert early is not None
    read = _read(_notify(_protected(at_focus), cms.CONTENT_TYPE), Protection.KMS, keyring=_ring(early))  # fmt: skip
    assert read.received is not None
    assert read.received.view == ConferenceView(1, INFO)
