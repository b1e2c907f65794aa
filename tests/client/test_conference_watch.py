"""The participant's conference watch against a notifier played by our own user agent.

The notifier (the focus side is not built yet) answers the SUBSCRIBE and sends NOTIFYs
whose documents :mod:`secconf.core.confinfo` builds, protected with
:func:`secconf.core.cms.protect` in KMS mode; TLS certificates come from the lab's
throwaway CA (:mod:`secconf.lab.tlsca`).  Every refused NOTIFY must be answered with its
specific status and leave the participant's view as it was.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from secconf.client.conference_events import (
    ACCEPT_KMS,
    ACCEPT_SDES,
    ConferenceWatch,
    EventKeyring,
    KmsSubscription,
    NotifyLimits,
    Protection,
    WatchTiming,
    format_rows,
    roster_rows,
)
from secconf.client.sip import Answer, IncomingRequest, ServerSubscription, UserAgent
from secconf.core import cms
from secconf.core.cms import EventKey, event_key_id
from secconf.core.confinfo import (
    CONFERENCE_INFO_TYPE,
    ConferenceInfo,
    ConferenceState,
    ConferenceView,
    Endpoint,
    EndpointStatus,
    JoiningMethod,
    Keying,
    Media,
    OfferMode,
    User,
    deleted_document,
    full_document,
    partial_document,
)
from secconf.core.errors import SecconfError
from secconf.core.mikey import ticket as mt
from secconf.lab.tlsca import TlsFiles, init_ca, participant_contexts
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
KEY = EventKey(event_key_id(0x1234), bytes(range(0x20, 0x40)))
OTHER_KEY = EventKey(event_key_id(0x1235), bytes(range(0x40, 0x60)))
FAST = WatchTiming(expires=60, timer_n=5.0, request_timeout=5.0, final_notify_wait=2.0)


def _endpoint(user: str, ssrc: int, status: EndpointStatus = EndpointStatus.CONNECTED) -> Endpoint:
    return Endpoint(
        f"{user};ep=1",
        status=status,
        joining_method=JoiningMethod.DIALED_IN,
        media=(Media("1", type="audio", src_id=ssrc),),
    )


def _info(*users: tuple[str, int], epoch: int = 2) -> ConferenceInfo:
    return ConferenceInfo(
        CONFERENCE,
        state=ConferenceState(user_count=len(users), keying=Keying(OfferMode.KMS, epoch)),
        users=tuple(User(user, endpoints=(_endpoint(user, ssrc),)) for user, ssrc in users),
    )


ALICE_ONLY = _info(("sip:alice@example.com", 1111))
ALICE_BOB = _info(("sip:alice@example.com", 1111), ("sip:bob@example.com", 2222))
BOB_ONLY = _info(("sip:bob@example.com", 2222), epoch=3)


def _protect(document: bytes, key: EventKey = KEY) -> bytes:
    entity = cms.inner_entity(CONFERENCE_INFO_TYPE, document)
    return cms.protect(entity, kek=key.kek, kek_id=key.key_id, random_bytes=CountingRandom())


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return init_ca(tmp_path_factory.mktemp("ca"), ["127.0.0.1"], clients=["alice", "focus"])


class Focus:
    """The notifier: accepts every conference SUBSCRIBE and sends what the test says."""

    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua
        self.subscribes: list[IncomingRequest] = []

        async def on_subscribe(incoming: IncomingRequest) -> Answer:
            self.subscribes.append(incoming)
            return Answer(200)

        ua.on_subscribe = on_subscribe

    def uri(self) -> str:
        suffix = ";transport=tls" if self.ua.transport == "tls" else ""
        return f"sip:conf-7@127.0.0.1:{self.ua.local_port}{suffix}"

    async def subscription(self) -> ServerSubscription:
        subscription = await self.ua.next_subscription(5)
        await asyncio.sleep(0.1)  # the user agent's own first NOTIFY (no body) goes first
        return subscription

    @staticmethod
    async def send(
        subscription: ServerSubscription,
        body: bytes,
        *,
        content_type: str | None = cms.CONTENT_TYPE,
        state: str = "active;expires=60",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> int:
        extra = headers
        if content_type == cms.CONTENT_TYPE:
            extra = (("Content-Disposition", cms.CONTENT_DISPOSITION), *headers)
        response = await subscription.notify(
            body, content_type=content_type, state=state, extra_headers=extra, timeout=5
        )
        return response.status


Scenario = Callable[[UserAgent, Focus], Awaitable[None]]


def run(scenario: Scenario, tls: TlsFiles | None) -> None:
    async def main() -> None:
        contexts: dict[str, tuple[ssl.SSLContext | None, ssl.SSLContext | None]] = {
            name: participant_contexts(tls, name) if tls else (None, None)
            for name in ("alice", "focus")
        }
        transport = "tls" if tls else "udp"
        alice = await UserAgent.start("127.0.0.1", transport=transport, ssl_context=contexts["alice"][0],  # type: ignore[arg-type]
                                      client_ssl_context=contexts["alice"][1], identity="sip:alice@example.com")  # fmt: skip
        focus = await UserAgent.start("127.0.0.1", transport=transport, ssl_context=contexts["focus"][0],  # type: ignore[arg-type]
                                      client_ssl_context=contexts["focus"][1], identity="sip:conf-7@example.com")  # fmt: skip
        try:
            await asyncio.wait_for(scenario(alice, Focus(focus)), 30)
        finally:
            await alice.close()
            await focus.close()

    asyncio.run(main())


def _keyring(*keys: EventKey) -> EventKeyring:
    keyring = EventKeyring()
    for key in keys:
        keyring.install(key)
    return keyring


async def _kms_watch(alice: UserAgent, focus: Focus, **options: object) -> ConferenceWatch:
    return await ConferenceWatch.start(
        alice,
        focus.uri(),
        protection=Protection.KMS,
        keyring=_keyring(KEY),
        timing=options.pop("timing", FAST),  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )


# -- the view follows full and partial documents -----------------------------------------


def test_kms_over_tls_full_then_partial_updates(tls_files: TlsFiles) -> None:
    async def scenario(alice: UserAgent, focus: Focus) -> None:
        seen: list[ConferenceView] = []
        watch = await _kms_watch(alice, focus, on_view=seen.append)
        sub = await focus.subscription()
        request = focus.subscribes[0].request
        assert request.get("event") == "conference"
        assert request.get("accept") == ACCEPT_KMS
        assert request.get("expires") == "60"

        assert await focus.send(sub, _protect(full_document(ALICE_ONLY, 1))) == 200
        view = await watch.next_view(5)
        assert (view.version, view.info) == (1, ALICE_ONLY)
        partial = partial_document(ALICE_ONLY, ALICE_BOB, 2)
        assert partial is not None
        assert b'state="partial"' in partial
        assert await focus.send(sub, _protect(partial)) == 200
        view = await watch.next_view(5)
        assert (view.version, view.info) == (2, ALICE_BOB)
        assert watch.view == view
        assert seen == [ConferenceView(1, ALICE_ONLY), view]

        # A stale document (version <= held) is answered 200 and ignored (§4.6).
        assert await focus.send(sub, _protect(full_document(ALICE_ONLY, 2))) == 200
        assert watch.view == view

        rows = roster_rows(view)
        assert [(r.user, r.status, r.joining_method, r.ssrcs, r.epoch) for r in rows] == [
            ("sip:alice@example.com", "connected", "dialed-in", (1111,), 2),
            ("sip:bob@example.com", "connected", "dialed-in", (2222,), 2),
        ]
        lines = format_rows(rows)
        assert lines[0].split() == ["user", "status", "joined", "ssrc", "epoch"]
        assert KEY.kek.hex() not in "\n".join(lines)
        await watch.close()
        assert watch.end_reason == "closed"
        unsubscribe = await sub.refreshes.get()
        assert unsubscribe.get("expires") == "0"

    run(scenario, tls_files)


def test_sdes_over_tls_takes_plain_xml(tls_files: TlsFiles) -> None:
    async def scenario(alice: UserAgent, focus: Focus) -> None:
        watch = await ConferenceWatch.start(alice, focus.uri(), protection=Protection.SDES, timing=FAST)  # fmt: skip
        sub = await focus.subscription()
        assert focus.subscribes[0].request.get("accept") == ACCEPT_SDES
        status = await focus.send(sub, full_document(ALICE_ONLY, 1), content_type=CONFERENCE_INFO_TYPE)  # fmt: skip
        assert status == 200
        assert (await watch.next_view(5)).info == ALICE_ONLY
        # A CMS body in SDES mode is not what was asked for.
        assert await focus.send(sub, _protect(full_document(ALICE_BOB, 2))) == 415
        assert watch.view is not None
        assert watch.view.version == 1
        await watch.close()

    run(scenario, tls_files)


# -- RESYNC: a gap in the versions triggers a re-SUBSCRIBE for full state ------------------


def test_a_version_gap_resubscribes_for_full_state(tls_files: TlsFiles) -> None:
    async def scenario(alice: UserAgent, focus: Focus) -> None:
        watch = await _kms_watch(alice, focus)
        sub = await focus.subscription()
        assert await focus.send(sub, _protect(full_document(ALICE_ONLY, 1))) == 200
        await watch.next_view(5)
        gapped = partial_document(ALICE_ONLY, ALICE_BOB, 3)
        assert gapped is not None
        assert await focus.send(sub, _protect(gapped)) == 200
        refresh = await asyncio.wait_for(sub.refreshes.get(), 5)
        assert refresh.get("event") == "conference"
        assert refresh.get("accept") == ACCEPT_KMS
        assert refresh.get("expires") == "60"
        assert watch.view is not None
        assert watch.view.version == 1
        assert watch.counters.resyncs == 1
        # RFC 6665 §4.2.1.2: the refresh is followed by a NOTIFY with full state.
        assert await focus.send(sub, _protect(full_document(ALICE_BOB, 3))) == 200
        view = await watch.next_view(5)
        assert (view.version, view.info) == (3, ALICE_BOB)
        await watch.close()

    run(scenario, tls_files)


# -- refusals: the right status, and the view unchanged ------------------------------------


def _tampered(body: bytes) -> bytes:
    damaged = bytearray(body)
    damaged[-20] ^= 0x01  # inside the ciphertext or the tag
    return bytes(damaged)


WRONG_KEY = EventKey(KEY.key_id, bytes(32))  # the right key id, another KEK
REFUSED = [
    ("tampered", lambda doc: _tampered(_protect(doc)), cms.CONTENT_TYPE, (), 493),
    ("wrong key", lambda doc: _protect(doc, WRONG_KEY), cms.CONTENT_TYPE, (), 493),
    ("key not held", lambda doc: _protect(doc, OTHER_KEY), cms.CONTENT_TYPE, (), 493),
    ("truncated", lambda doc: _protect(doc)[:-7], cms.CONTENT_TYPE, (), 400),
    ("half", lambda doc: _protect(doc)[: len(_protect(doc)) // 2], cms.CONTENT_TYPE, (), 400),
    ("not CMS", lambda doc: b"\x30\x03\x02\x01\x00", cms.CONTENT_TYPE, (), 400),
    ("plain XML in KMS mode", lambda doc: doc, CONFERENCE_INFO_TYPE, (), 403),
    ("enveloped-data", _protect, "application/pkcs7-mime; smime-type=enveloped-data", (), 415),
    ("base64", _protect, cms.CONTENT_TYPE, (("Content-Transfer-Encoding", "base64"),), 415),
    ("text/plain", lambda doc: b"hello", "text/plain", (), 415),
    ("oversize", lambda doc: bytes(40_000), cms.CONTENT_TYPE, (), 413),
]


def test_refused_notifies_get_their_status_and_change_nothing(tls_files: TlsFiles) -> None:
    async def scenario(alice: UserAgent, focus: Focus) -> None:
        watch = await _kms_watch(alice, focus, limits=NotifyLimits(max_body_bytes=16_384))
        sub = await focus.subscription()
        assert await focus.send(sub, _protect(full_document(ALICE_ONLY, 1))) == 200
        held = await watch.next_view(5)
        document = full_document(ALICE_BOB, 2)
        expected: list[int] = []
        for name, make, content_type, headers, status in REFUSED:
            answered = await focus.send(sub, make(document), content_type=content_type, headers=headers)  # fmt: skip
            assert answered == status, name
            expected.append(status)
            assert watch.view == held, name
        # Event and Subscription-State.
        assert await focus.send(sub, _protect(document), state="sleepy") == 400
        assert await focus.send(sub, _protect(document), state="active;expires=soon") == 400
        expected += [400, 400]
        request = sub.dialog.create_request(
            "NOTIFY", via=focus.ua._transport_layer.new_via(), body=_protect(document),
            content_type=cms.CONTENT_TYPE,
            extra_headers=[("Event", "presence"), ("Subscription-State", "active")],
        )  # fmt: skip
        dest = focus.ua._transport_layer.dialog_destination(sub.dialog)
        response = await focus.ua._transactions.transact(request, dest, 5)
        assert response.status == 489
        expected.append(489)
        assert watch.view == held
        assert watch.refusals == expected
        assert watch._views.empty()
        assert not watch.ended.is_set()
        # The next good document still applies: nothing was half taken.
        assert await focus.send(sub, _protect(document)) == 200
        assert (await watch.next_view(5)).info == ALICE_BOB
        await watch.close()

    run(scenario, tls_files)


def test_kms_mode_refuses_plain_xml_over_udp_and_sdes_will_not_start_on_udp() -> None:
    async def scenario(alice: UserAgent, focus: Focus) -> None:
        with pytest.raises(ValueError, match="TLS"):
            await ConferenceWatch.start(alice, focus.uri(), protection=Protection.SDES)
        assert focus.subscribes == []  # nothing left for the network
        watch = await _kms_watch(alice, focus)
        sub = await focus.subscription()
        plain = full_document(ALICE_ONLY, 1)
        assert await focus.send(sub, plain, content_type=CONFERENCE_INFO_TYPE) == 403
        assert watch.view is None
        assert await focus.send(sub, _protect(plain)) == 200
        assert (await watch.next_view(5)).info == ALICE_ONLY
        await watch.close()

    run(scenario, None)


# -- the end: terminated, deleted; refresh before expiry ------------------------------------


def test_terminated_ends_the_watch(tls_files: TlsFiles) -> None:
    async def scenario(alice: UserAgent, focus: Focus) -> None:
        watch = await _kms_watch(alice, focus)
        sub = await focus.subscription()
        views: list[ConferenceView] = []

        async def read() -> None:
            async for view in watch.views():
                views.append(view)

        reader = asyncio.ensure_future(read())
        assert await focus.send(sub, _protect(full_document(ALICE_ONLY, 1))) == 200
        final = _protect(full_document(BOB_ONLY, 2), KEY)
        assert await focus.send(sub, final, state="terminated;reason=noresource") == 200
        await asyncio.wait_for(reader, 5)  # the iterator ends with the subscription
        assert [v.version for v in views] == [1, 2]
        assert watch.ended.is_set()
        assert watch.end_reason == "terminated (noresource)"
        # Later NOTIFYs: the subscription does not exist any more.
        assert await focus.send(sub, _protect(full_document(BOB_ONLY, 3))) == 481
        await watch.close()
        assert sub.refreshes.empty()  # no un-SUBSCRIBE for a subscription already over

    run(scenario, tls_files)


def test_deleted_conference_ends_and_unsubscribes(tls_files: TlsFiles) -> None:
    async def scenario(alice: UserAgent, focus: Focus) -> None:
        watch = await _kms_watch(alice, focus)
        sub = await focus.subscription()
        assert await focus.send(sub, _protect(full_document(ALICE_ONLY, 1))) == 200
        await watch.next_view(5)
        assert await focus.send(sub, _protect(deleted_document(CONFERENCE, 2))) == 200
        await asyncio.wait_for(watch.ended.wait(), 5)
        assert watch.view is None
        assert watch.end_reason == "conference deleted"
        unsubscribe = await asyncio.wait_for(sub.refreshes.get(), 5)
        assert unsubscribe.get("expires") == "0"
        await watch.close()

    run(scenario, tls_files)


def test_refresh_before_expiry(tls_files: TlsFiles) -> None:
    async def scenario(alice: UserAgent, focus: Focus) -> None:
        timing = WatchTiming(expires=2, timer_n=5.0, request_timeout=5.0)
        watch = await _kms_watch(alice, focus, timing=timing)
        sub = await focus.subscription()
        assert await focus.send(sub, _protect(full_document(ALICE_ONLY, 1)), state="active;expires=2") == 200  # fmt: skip
        for round_ in (1, 2):
            refresh = await asyncio.wait_for(sub.refreshes.get(), 3)  # at half of 2 s
            assert refresh.get("expires") == "2"
            assert refresh.get("event") == "conference"
            assert await focus.send(sub, b"", content_type=None, state="active;expires=2") == 200
            assert watch.counters.refreshes == round_
        assert not watch.ended.is_set()
        assert watch.view is not None
        await watch.close()

    run(scenario, tls_files)


def test_no_notify_within_timer_n_ends_the_watch() -> None:
    async def scenario(alice: UserAgent, focus: Focus) -> None:
        focus.ua.outgoing_filter = lambda data: data.startswith(b"NOTIFY ")
        timing = WatchTiming(expires=60, timer_n=0.5)
        watch = await _kms_watch(alice, focus, timing=timing)
        await asyncio.wait_for(watch.ended.wait(), 5)
        assert watch.end_reason == "no NOTIFY within Timer N"

    run(scenario, None)


# -- standard CMS: a body made by OpenSSL is opened -------------------------------------------


@pytest.fixture(scope="module")
def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("openssl is not installed (docker/bootstrap-debian.sh installs it)")
    version = subprocess.run([path, "version"], capture_output=True, text=True, check=True)
    match = re.match(r"OpenSSL (\d+)\.", version.stdout)
    if match is None or int(match.group(1)) < 3:
        pytest.skip(f"AuthEnvelopedData needs OpenSSL 3: {version.stdout.strip()}")
    return path


def test_a_notify_body_made_by_openssl_is_accepted(
    tls_files: TlsFiles, openssl: str, tmp_path: Path
) -> None:
    plain = tmp_path / "entity"
    plain.write_bytes(cms.inner_entity(CONFERENCE_INFO_TYPE, full_document(ALICE_BOB, 1)))
    out = tmp_path / "out.p7m"
    done = subprocess.run(
        [openssl, "cms", "-encrypt", "-binary", "-aes-256-gcm", "-secretkey", KEY.kek.hex(),
         "-secretkeyid", KEY.key_id.hex(), "-in", str(plain), "-outform", "DER", "-out", str(out)],
        capture_output=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    body = out.read_bytes()

    async def scenario(alice: UserAgent, focus: Focus) -> None:
        watch = await _kms_watch(alice, focus)
        sub = await focus.subscription()
        assert await focus.send(sub, body) == 200
        assert (await watch.next_view(5)).info == ALICE_BOB
        await watch.close()

    run(scenario, tls_files)


# -- the command: secconf client subscribe ------------------------------------------------------


def test_cli_subscribe_prints_the_roster_on_each_change(tls_files: TlsFiles) -> None:
    from secconf.cli import build_parser
    from secconf.cli.client import subscribe_and_print

    cert, key = tls_files.clients["alice"]

    async def main() -> None:
        server, client = participant_contexts(tls_files, "focus")
        focus = Focus(await UserAgent.start("127.0.0.1", transport="tls", ssl_context=server,
                                            client_ssl_context=client, identity="sip:conf-7@example.com"))  # fmt: skip
        args = build_parser().parse_args([
            "client", "subscribe", "--target", focus.uri(), "--identity", "sip:alice@example.com",
            "--mode", "sdes", "--ca-file", str(tls_files.ca_cert), "--cert-file", str(cert),
            "--key-file", str(key), "--seconds", "20",
        ])  # fmt: skip
        out = io.StringIO()
        try:
            command = asyncio.ensure_future(subscribe_and_print(args, out))
            sub = await focus.subscription()
            assert (
                await focus.send(
                    sub, full_document(ALICE_ONLY, 1), content_type=CONFERENCE_INFO_TYPE
                )
                == 200
            )
            partial = partial_document(ALICE_ONLY, ALICE_BOB, 2)
            assert partial is not None
            assert await focus.send(sub, partial, content_type=CONFERENCE_INFO_TYPE) == 200
            assert await focus.send(sub, b"", content_type=None, state="terminated;reason=noresource") == 200  # fmt: skip
            assert await asyncio.wait_for(command, 10) == 0
        finally:
            await focus.ua.close()
        text = out.getvalue()
        blocks = text.split("\n\n")
        assert blocks[0].splitlines()[0].endswith("version 1")
        assert "sip:bob@example.com" not in blocks[0]
        assert blocks[1].splitlines()[0].endswith("version 2")
        bob = next(line for line in blocks[1].splitlines() if line.startswith("sip:bob"))
        assert bob.split() == ["sip:bob@example.com", "connected", "dialed-in", "2222", "2"]
        assert text.rstrip().endswith("-- ended: terminated (noresource)")

    asyncio.run(main())


def test_cli_subscribe_in_kms_mode_needs_the_kms() -> None:
    from secconf.cli import build_parser
    from secconf.cli.client import _cmd_client_subscribe

    args = build_parser().parse_args([
        "client", "subscribe", "--target", "sip:conf-7@127.0.0.1", "--identity",
        "sip:alice@example.com", "--mode", "kms", "--kms-url", "http://127.0.0.1:1",
    ])  # fmt: skip
    with pytest.raises(SystemExit, match="--kms-identity, --psk-file, --focus-identity"):
        _cmd_client_subscribe(args)


# -- KMS mode: the SUBSCRIBE's own MIKEY-TICKET exchange --------------------------------------


def _exchange(*, forking: bool) -> tuple[Kms, KmsSubscription]:
    kms = Kms(CountingRandom(b"kms"))
    issued = _issue(kms, _desired(recipients=(FOCUS,), forking=forking))
    return kms, KmsSubscription(_transfer(issued, FOCUS), lambda: NOW)


@pytest.mark.parametrize("forking", [False, True])
def test_kms_subscribe_carries_the_exchange_and_the_notify_opens(forking: bool) -> None:
    kms, exchange = _exchange(forking=forking)
    keys: list[EventKey] = []

    async def scenario(alice: UserAgent, focus: Focus) -> None:
        async def on_subscribe(incoming: IncomingRequest) -> Answer:
            request = incoming.request
            focus.subscribes.append(incoming)
            if request.get("content-type") != "application/mikey":
                return Answer(400)
            data = base64.b64decode(request.body)
            answer = _respond(kms, data, FOCUS)
            keys.append(cms.event_key_of_transfer(mt.TransferInit.read(data), answer.resolved))
            return Answer(200, base64.b64encode(answer.data), "application/mikey")

        focus.ua.on_subscribe = on_subscribe
        watch = await ConferenceWatch.start(
            alice, focus.uri(), protection=Protection.KMS, kms=exchange, timing=FAST
        )
        sub = await focus.subscription()
        assert await focus.send(sub, _protect(full_document(ALICE_ONLY, 1), keys[0])) == 200
        assert (await watch.next_view(5)).info == ALICE_ONLY
        # Another subscription's key opens nothing here.
        partial = partial_document(ALICE_ONLY, ALICE_BOB, 2)
        assert partial is not None
        assert await focus.send(sub, _protect(partial, KEY)) == 493
        await watch.close()

    run(scenario, None)
    assert len(keys) == 1


def test_kms_subscribe_answered_by_another_focus_ends_the_watch() -> None:
    kms, exchange = _exchange(forking=True)

    async def scenario(alice: UserAgent, focus: Focus) -> None:
        async def on_subscribe(incoming: IncomingRequest) -> Answer:
            answer = bytearray(_respond(kms, base64.b64decode(incoming.request.body), FOCUS).data)
            answer[-5] ^= 0x40  # the verification MAC: not the focus's
            return Answer(200, base64.b64encode(bytes(answer)), "application/mikey")

        focus.ua.on_subscribe = on_subscribe
        with pytest.raises(SecconfError):
            await ConferenceWatch.start(
                alice, focus.uri(), protection=Protection.KMS, kms=exchange, timing=FAST
            )
        # ... and un-SUBSCRIBEs at once (RFC 6665 §4.1.2.3).
        sub = await focus.ua.next_subscription(5)
        refresh = await asyncio.wait_for(sub.refreshes.get(), 5)
        assert refresh.get("expires") == "0"

    run(scenario, None)


def test_subscribe_answers_a_digest_challenge() -> None:
    async def scenario(alice: UserAgent, focus: Focus) -> None:
        from secconf.core import digest

        realm, password = "example.com", "s3cret"
        ha1 = digest.compute_ha1("alice", realm, password, "SHA-256")
        challenge = digest.challenge(realm, "nonce-1", "SHA-256")
        seen: list[tuple[str | None, int]] = []

        async def on_subscribe(incoming: IncomingRequest) -> Answer:
            header = incoming.request.get("authorization")
            seen.append((header, incoming.request.cseq.number))
            if header is None:
                return Answer(401, headers=(("WWW-Authenticate", challenge),))
            ok = digest.verify(digest.parse_credentials(header), ha1, "SUBSCRIBE")
            return Answer(200 if ok else 403)

        focus.ua.on_subscribe = on_subscribe
        watch = await ConferenceWatch.start(
            alice, focus.uri(), protection=Protection.KMS, keyring=_keyring(KEY),
            credentials=("alice", password), timing=FAST,
        )  # fmt: skip
        assert [cseq for _, cseq in seen] == [1, 2]
        sub = await focus.subscription()
        assert await focus.send(sub, _protect(full_document(ALICE_ONLY, 1))) == 200
        assert (await watch.next_view(5)).info == ALICE_ONLY
        await watch.close()

    run(scenario, None)


def test_a_refresh_refused_481_ends_the_watch() -> None:
    async def scenario(alice: UserAgent, focus: Focus) -> None:
        timing = WatchTiming(expires=2, timer_n=5.0, request_timeout=5.0)
        watch = await _kms_watch(alice, focus, timing=timing)
        sub = await focus.subscription()
        assert await focus.send(sub, b"", content_type=None, state="active;expires=2") == 200
        focus.ua._dialogs.server_subscriptions.remove(sub)  # the notifier forgets it
        await asyncio.wait_for(watch.ended.wait(), 5)
        assert watch.end_reason == "refresh refused (481)"
        await watch.close()

    run(scenario, None)


def test_a_subscription_never_refreshed_expires() -> None:
    async def scenario(alice: UserAgent, focus: Focus) -> None:
        timing = WatchTiming(expires=2, timer_n=5.0, request_timeout=0.3)
        watch = await _kms_watch(alice, focus, timing=timing)
        sub = await focus.subscription()
        assert await focus.send(sub, b"", content_type=None, state="active;expires=2") == 200
        # From now on no SUBSCRIBE reaches the notifier: each refresh times out (408).
        alice.outgoing_filter = lambda data: data.startswith(b"SUBSCRIBE ")
        await asyncio.wait_for(watch.ended.wait(), 5)
        assert watch.end_reason == "expired"
        assert watch.counters.refreshes >= 2  # retried before giving up
        await watch.close()

    run(scenario, None)
