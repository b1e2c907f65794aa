"""secconf.core.gate: canonical targets, dialog peers, the Record-Route MAC (issue 12)."""

from __future__ import annotations

import contextlib
import re
import subprocess
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secconf.core.errors import Forbidden, MalformedSipMessage
from secconf.core.focus import TargetKind, classify_target
from secconf.core.gate import (
    AckHops,
    DialogPeers,
    Direction,
    Flow,
    Peer,
    body_allowed,
    canonical_user,
    destination_uri,
    in_dialog_direction,
    in_dialog_method_allowed,
    route_mac,
    route_mac_ok,
    sender_fingerprint,
)

FACTORY = re.compile("conf-factory")
CONFERENCE = re.compile("conf-(?P<id>[0-9a-z]{16})")
ID = "0123456789abcdef"


@pytest.mark.parametrize(
    "spelling",
    [f"conf-{ID}", f"conf%2D{ID}", f"conf%2d{ID}", f"%63onf-{ID}", f"%63%6F%6E%66%2D{ID}"],
)
def test_every_spelling_of_a_conference_is_that_conference(spelling: str) -> None:
    # RFC 3261 §19.1.4: "%61lice" and "alice" are the same user.
    target = classify_target(spelling, FACTORY, CONFERENCE)
    assert target.kind is TargetKind.CONFERENCE
    assert target.conference_id == ID


@pytest.mark.parametrize("spelling", ["conf%2Dfactory", "%63onf-factory"])
def test_every_spelling_of_the_factory_is_the_factory(spelling: str) -> None:
    assert classify_target(spelling, FACTORY, CONFERENCE).kind is TargetKind.FACTORY


@pytest.mark.parametrize(
    "raw",
    ["conf%2", "conf%zz-x", "conf%00x", "conf%0Ax", "a%ff%fe", "conf x", "conf\x00", "a" * 300],
)
def test_broken_or_hostile_user_parts_are_400(raw: str) -> None:
    with pytest.raises(MalformedSipMessage):
        canonical_user(raw)


def test_user_case_is_kept_user_parts_are_case_sensitive() -> None:
    # RFC 3261 §19.1.4: the user part compares case-sensitively: CONF-... is not a conference.
    assert canonical_user("Conf-X") == "Conf-X"
    assert classify_target(f"CONF-{ID}", FACTORY, CONFERENCE).kind is TargetKind.OTHER


@given(st.text(max_size=40))
def test_canonical_user_inverts_percent_encoding(text: str) -> None:
    # urllib's encoder (not ours) escapes everything outside the unreserved set.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return
    encoded = urllib.parse.quote(text, safe="")
    if len(encoded) > 256:
        return
    assert canonical_user(encoded) == (text or None)


@given(st.text(max_size=60))
def test_canonical_user_raises_only_malformed(raw: str) -> None:
    with contextlib.suppress(MalformedSipMessage):
        canonical_user(raw)


PARTICIPANT = Peer("ptag", Flow.of("TLS", "192.0.2.10", 50123), "sip:alice@192.0.2.10:5061")
MIXER = Peer("mtag", Flow.of("udp", "127.0.0.1", 5080), "sip:asterisk@127.0.0.1:5080")
PEERS = DialogPeers(PARTICIPANT, MIXER)


def test_peers_round_trip_through_json() -> None:
    assert DialogPeers.from_json(PEERS.to_json()) == PEERS
    assert PARTICIPANT.flow.secure
    assert not MIXER.flow.secure
    with pytest.raises(Forbidden):
        DialogPeers.from_json('[["x"]]')


def test_direction_comes_from_the_recorded_flow_and_tags() -> None:
    participant_flow = Flow.of("tls", "192.0.2.10", 50123)
    assert (
        in_dialog_direction(PEERS, participant_flow, "ptag", "mtag") is Direction.FROM_PARTICIPANT
    )
    assert (
        in_dialog_direction(PEERS, Flow.of("udp", "127.0.0.1", 5080), "mtag", "ptag")
        is Direction.FROM_MIXER
    )
    assert PEERS.receiver(Direction.FROM_PARTICIPANT) == MIXER
    assert PEERS.receiver(Direction.FROM_MIXER) == PARTICIPANT


@pytest.mark.parametrize(
    ("flow", "from_tag", "to_tag"),
    [
        (Flow.of("tls", "192.0.2.10", 50124), "ptag", "mtag"),  # another connection
        (Flow.of("udp", "192.0.2.10", 50123), "ptag", "mtag"),  # another transport
        (Flow.of("tls", "192.0.2.11", 50123), "ptag", "mtag"),  # another host
        (Flow.of("tls", "192.0.2.10", 50123), "mtag", "ptag"),  # the mixer's tags
        (Flow.of("udp", "127.0.0.1", 5080), "ptag", "mtag"),  # the participant's tags
        (Flow.of("udp", "127.0.0.1", 5081), "mtag", "ptag"),  # not the mixer's port
        (Flow.of("tls", "192.0.2.10", 50123), "ptag", None),  # no To tag
        (Flow.of("tls", "192.0.2.10", 50123), "ptag", "other"),
    ],
)
def test_anyone_else_is_forbidden(flow: Flow, from_tag: str, to_tag: str | None) -> None:
    with pytest.raises(Forbidden):
        in_dialog_direction(PEERS, flow, from_tag, to_tag)


def test_ack_hops_are_the_gate_precomputed() -> None:
    hops = AckHops.of(PEERS)
    assert AckHops.decode(hops.encode()) == hops
    participant = sender_fingerprint(Flow.of("tls", "192.0.2.10", 50123), "ptag", "mtag")
    mixer = sender_fingerprint(Flow.of("udp", "127.0.0.1", 5080), "mtag", "ptag")
    assert hops.next_hop(participant) == (MIXER.contact, "sip:127.0.0.1:5080;transport=udp")
    assert hops.next_hop(mixer) == (PARTICIPANT.contact, "sip:192.0.2.10:50123;transport=tls")
    assert hops.receiver(Direction.FROM_PARTICIPANT) == hops.next_hop(participant)
    assert hops.receiver(Direction.FROM_MIXER) == hops.next_hop(mixer)
    assert destination_uri(Flow.of("tcp", "2001:DB8::1", 5061)) == (
        "sip:[2001:db8::1]:5061;transport=tcp"
    )


@pytest.mark.parametrize(
    "text", ["", "[]", "{}", '["a","b","c","d","e"]', '["a","b","c","d","e",6]', "not json"]
)
def test_ack_hops_refuse_anything_else(text: str) -> None:
    assert AckHops.decode(text) is None


flows = st.builds(
    Flow.of, st.sampled_from(["udp", "tcp", "tls"]),
    st.sampled_from(["127.0.0.1", "192.0.2.10", "2001:db8::1"]), st.integers(1, 65535),
)  # fmt: skip
tags = st.text(alphabet="abcdefgh0123456789-.", min_size=1, max_size=8)


@given(flows, tags, flows, tags, flows, tags, st.one_of(st.none(), tags))
def test_ack_hops_decide_as_the_gate_does(
    participant_flow: Flow, participant_tag: str, mixer_flow: Flow, mixer_tag: str,
    flow: Flow, from_tag: str, to_tag: str | None,
) -> None:  # fmt: skip
    """Whatever the request's flow and tags: passed to the same hop, or refused by both."""
    peers = DialogPeers(
        Peer(participant_tag, participant_flow, "sip:p@192.0.2.10"),
        Peer(mixer_tag, mixer_flow, "sip:m@127.0.0.1"),
    )
    fingerprint = sender_fingerprint(flow, from_tag, to_tag)
    try:
        direction = in_dialog_direction(peers, flow, from_tag, to_tag)
    except Forbidden:
        with pytest.raises(Forbidden):
            AckHops.of(peers).next_hop(fingerprint)
        return
    receiver = peers.receiver(direction)
    expected = (receiver.contact, destination_uri(receiver.flow))
    assert AckHops.decode(AckHops.of(peers).encode()).next_hop(fingerprint) == expected  # type: ignore[union-attr]


def test_methods_and_bodies_per_side() -> None:
    assert in_dialog_method_allowed(Direction.FROM_PARTICIPANT, "REFER")
    assert not in_dialog_method_allowed(Direction.FROM_MIXER, "REFER")
    for method in ("MESSAGE", "SUBSCRIBE", "NOTIFY", "PUBLISH", "REGISTER", "PRACK"):
        assert not in_dialog_method_allowed(Direction.FROM_PARTICIPANT, method)
        assert not in_dialog_method_allowed(Direction.FROM_MIXER, method)
    assert body_allowed("INVITE", "application/sdp", 100)
    assert not body_allowed("UPDATE", "Application/SDP; charset=x", 100)
    assert not body_allowed("ACK", "application/sdp", 100)
    assert not body_allowed("INFO", "multipart/mixed;boundary=x", 100)
    assert body_allowed("INFO", "application/dtmf-relay", 20)
    assert body_allowed("UPDATE", None, 0)


def test_route_mac_matches_openssl() -> None:
    """HMAC-SHA256 over label NUL conference NUL Call-ID NUL tag, computed by openssl too."""
    key = bytes(range(32))
    message = b"secconf-record-route-v1\0" + ID.encode() + b"\0call-1@host\0ptag"
    result = subprocess.run(
        ["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt", f"hexkey:{key.hex()}"],
        input=message, capture_output=True, check=True, timeout=10,
    )  # fmt: skip
    expected = result.stdout.decode().strip().rsplit(" ", 1)[-1][:32]
    assert route_mac(key, ID, "call-1@host", "ptag") == expected


def test_route_mac_ok_takes_the_caller_tag_from_either_header() -> None:
    key = b"k" * 32
    mac = route_mac(key, ID, "c@h", "caller")
    assert route_mac_ok(key, ID, "c@h", ("caller", "callee"), mac)  # from the caller
    assert route_mac_ok(key, ID, "c@h", ("callee", "caller"), mac.upper())  # from the callee
    assert not route_mac_ok(key, ID, "c@h", ("x", "y"), mac)
    assert not route_mac_ok(key, "fedcba9876543210", "c@h", ("caller", "y"), mac)
    assert not route_mac_ok(key, ID, "other@h", ("caller", "y"), mac)
    assert not route_mac_ok(b"j" * 32, ID, "c@h", ("caller", "y"), mac)
    assert not route_mac_ok(key, ID, "c@h", ("caller", "y"), None)
    assert not route_mac_ok(key, ID, "c@h", ("caller", "y"), mac[:-1])


def test_identities_compare_in_their_canonical_spelling() -> None:
    from secconf.core.focus import normalize_identity

    assert normalize_identity("<sip:%62ob@Example.COM;transport=tls>") == "sip:bob@example.com"
    assert normalize_identity("sip:b%6Fb@example.com") == "sip:bob@example.com"
    assert normalize_identity("sip:Bob@example.com") != "sip:bob@example.com"  # user: case kept
    with pytest.raises(MalformedSipMessage):
        normalize_identity("sip:b%0Aob@example.com")
