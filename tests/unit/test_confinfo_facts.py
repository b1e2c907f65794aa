"""The conference's facts and the RFC 4575 state they describe (secconf.core.confinfo.facts).

Every described state is written with ``full_document`` and validated against the RFC 4575
schema (xmlschema); Hypothesis checks that any facts give a document that reads back as
the described state.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secconf.core.confinfo import (
    ConferenceFacts,
    DepartureFacts,
    DisconnectionMethod,
    EndpointStatus,
    JoiningMethod,
    MediaStatus,
    MemberFacts,
    OfferMode,
    describe,
    full_document,
    info_from_element,
    leg_endpoint,
    read_document,
)
from secconf.core.errors import MalformedConferenceInfo
from tests.fixtures.confinfo import CONFERENCE, assert_valid

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
T0 = 1_800_000_000


def _member(identity: str, call_id: str, **changes: object) -> MemberFacts:
    fields: dict[str, object] = {
        "in_bridge": True, "answered": True, "dialed_out": False, "mode": OfferMode.KMS,
        "ssrcs": (7, 3), "joined": T0, "epoch": 2,
    }  # fmt: skip
    fields.update(changes)
    return MemberFacts(identity, _leg(identity, call_id), **fields)  # type: ignore[arg-type]


def _facts(
    members: tuple[MemberFacts, ...], departures: tuple[DepartureFacts, ...] = ()
) -> ConferenceFacts:
    return ConferenceFacts("c7", CONFERENCE, OfferMode.KMS, 2, T0 + 5, True, members, departures)


def _leg(identity: str, call_id: str) -> str:
    return leg_endpoint(identity, hashlib.sha256(call_id.encode()).hexdigest())


def test_leg_endpoint_hides_the_call_id() -> None:
    digest = hashlib.sha256(b"call-1@host").hexdigest()
    endpoint = leg_endpoint(ALICE, digest)
    assert endpoint == f"{ALICE};leg={digest[:16]}"
    assert "call-1" not in endpoint
    assert leg_endpoint(ALICE + "?subject=x", digest) == endpoint
    with pytest.raises(MalformedConferenceInfo):
        leg_endpoint(ALICE, "call-1@host")


def test_a_connected_member_and_a_departure_of_the_same_identity() -> None:
    old = DepartureFacts(ALICE, _leg(ALICE, "old"), DisconnectionMethod.FAILED, T0 - 10, T0 - 100)
    gone = DepartureFacts(BOB, _leg(BOB, "b"), DisconnectionMethod.DEPARTED, T0 + 3, T0)
    info = describe(_facts((_member(ALICE, "new"),), (old, gone)))
    document = full_document(info, 1)
    assert_valid(document)
    assert info_from_element(read_document(document).root) == info
    assert info.state is not None
    assert info.state.user_count == 1
    assert info.state.active
    assert info.state.keying is not None
    assert info.state.keying.epoch == 2
    assert info.state.keying.last_rekey == T0 + 5
    assert info.description.conf_uris[0].uri == CONFERENCE
    assert [user.entity for user in info.users] == [ALICE, BOB]
    alice = info.user(ALICE)
    assert alice is not None
    assert len(alice.endpoints) == 2
    by_entity = {endpoint.entity: endpoint for endpoint in alice.endpoints}
    current = by_entity[_leg(ALICE, "new")]
    assert current.status is EndpointStatus.CONNECTED
    assert current.joining_method is JoiningMethod.DIALED_IN
    assert current.joining_info is not None
    assert current.joining_info.when == T0
    assert current.keying_mode is OfferMode.KMS
    assert [(m.id, m.src_id, m.status, m.type) for m in current.media] == [
        ("1", 3, MediaStatus.SENDRECV, "audio"),
        ("2", 7, MediaStatus.SENDRECV, "audio"),
    ]
    previous = by_entity[_leg(ALICE, "old")]
    assert previous.status is EndpointStatus.DISCONNECTED
    assert previous.disconnection_method is DisconnectionMethod.FAILED
    assert previous.disconnection_info is not None
    assert previous.disconnection_info.when == T0 - 10
    assert previous.media == ()
    bob = info.user(BOB)
    assert bob is not None
    assert bob.endpoints[0].disconnection_method is DisconnectionMethod.DEPARTED
    assert b"<src-id>3</src-id>" in document
    assert b"dialed-in" in document


@pytest.mark.parametrize(
    ("in_bridge", "answered", "dialed_out", "status"),
    [
        (True, True, False, EndpointStatus.CONNECTED),
        (False, True, False, EndpointStatus.PENDING),
        (False, False, False, EndpointStatus.DIALING_IN),
        (False, False, True, EndpointStatus.DIALING_OUT),
    ],
)
def test_endpoint_status(
    in_bridge: bool, answered: bool, dialed_out: bool, status: EndpointStatus
) -> None:
    member = _member(
        ALICE, "a", in_bridge=in_bridge, answered=answered, dialed_out=dialed_out,
        joined=T0 if answered else None, mode=OfferMode.SDES, ssrcs=(),
    )  # fmt: skip
    info = describe(_facts((member,)))
    assert_valid(full_document(info, 3))
    endpoint = info.users[0].endpoints[0]
    assert endpoint.status is status
    expected = JoiningMethod.DIALED_OUT if dialed_out else JoiningMethod.DIALED_IN
    assert endpoint.joining_method is expected
    assert info.state is not None
    assert info.state.user_count == (1 if in_bridge else 0)
    # SDES without a=ssrc: a medium without src-id while in the bridge, none otherwise.
    assert [m.src_id for m in endpoint.media] == ([None] if in_bridge else [])


def test_a_departed_leg_that_is_current_again_shows_once_connected() -> None:
    member = _member(ALICE, "a")
    left = DepartureFacts(ALICE, member.endpoint, DisconnectionMethod.BOOTED, T0)
    info = describe(_facts((member,), (left,)))
    assert [e.status for e in info.users[0].endpoints] == [EndpointStatus.CONNECTED]


def test_the_newest_departure_of_a_leg_wins() -> None:
    endpoint = _leg(BOB, "b")
    older = DepartureFacts(BOB, endpoint, DisconnectionMethod.FAILED, T0)
    newer = DepartureFacts(BOB, endpoint, DisconnectionMethod.BOOTED, T0 + 1)
    info = describe(_facts((), (older, newer)))
    assert info.users[0].endpoints[0].disconnection_method is DisconnectionMethod.BOOTED
    assert info.state is not None
    assert info.state.user_count == 0


def test_refusals() -> None:
    with pytest.raises(MalformedConferenceInfo):
        describe(_facts((_member(ALICE, "a"), _member(ALICE, "a"))))
    with pytest.raises(MalformedConferenceInfo):
        DepartureFacts(ALICE, "sip:x", DisconnectionMethod.BUSY, T0)
    with pytest.raises(MalformedConferenceInfo):
        _member(ALICE, "a", ssrcs=(2**32,))
    with pytest.raises(ValueError, match="OfferMode"):
        _member(ALICE, "a", mode="srtp")


def test_same_facts_same_document_whatever_the_order() -> None:
    members = (_member(BOB, "b"), _member(ALICE, "a", ssrcs=(9,)), _member(ALICE, "c"))
    forward = full_document(describe(_facts(members)), 1)
    backward = full_document(describe(_facts(tuple(reversed(members)))), 1)
    assert forward == backward


_identities = st.sampled_from([ALICE, BOB, "sips:carol@example.org", "sip:d@[2001:db8::1]"])
_instants = st.one_of(st.none(), st.integers(0, 2**33))
_members = st.builds(
    lambda identity, call_id, flags, mode, ssrcs, joined, epoch: MemberFacts(
        identity, _leg(identity, call_id), *flags, mode, tuple(ssrcs), joined, epoch
    ),
    _identities,
    st.text(min_size=1, max_size=8),
    st.tuples(st.booleans(), st.booleans(), st.booleans()),
    st.sampled_from(OfferMode),
    st.lists(st.integers(0, 2**32 - 1), max_size=3),
    _instants,
    st.one_of(st.none(), st.integers(1, 2**32 - 1)),
)
_departures = st.builds(
    lambda identity, call_id, method, when, joined, out: DepartureFacts(
        identity, _leg(identity, call_id), method, when, joined, out
    ),
    _identities,
    st.text(min_size=1, max_size=8),
    st.sampled_from(
        [DisconnectionMethod.DEPARTED, DisconnectionMethod.BOOTED, DisconnectionMethod.FAILED]
    ),
    st.integers(0, 2**33),
    _instants,
    st.booleans(),
)


@given(
    st.lists(_members, max_size=5, unique_by=lambda member: member.endpoint),
    st.lists(_departures, max_size=5),
    st.sampled_from(OfferMode),
    st.integers(0, 2**32 - 1),
    _instants,
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_described_state_round_trips_through_a_full_document(
    members: list[MemberFacts],
    departures: list[DepartureFacts],
    mode: OfferMode,
    epoch: int,
    last_rekey: int | None,
    active: bool,
    version: int,
) -> None:
    facts = ConferenceFacts("c", CONFERENCE, mode, epoch, last_rekey, active, tuple(members),
                            tuple(departures))  # fmt: skip
    info = describe(facts)
    document = full_document(info, version)
    assert_valid(document)
    read = read_document(document)
    assert info_from_element(read.root) == info
    assert read.version == version
    connected = {member.identity for member in members if member.in_bridge}
    assert info.state is not None
    assert info.state.user_count == len(connected)
    endpoints = {e.entity for user in info.users for e in user.endpoints}
    assert endpoints == {m.endpoint for m in members} | {d.endpoint for d in departures}
