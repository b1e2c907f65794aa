"""The mixer trusts only the focus's joins (issue 12, item 4): join tokens against the real Asterisk.

Asterisk identifies Kamailio by its address (127.0.0.1 here), so anything sent
from that address, straight to Asterisk's SIP port or relayed by Kamailio, reaches
the ``[secconf-conferences]`` dialplan.  There the join token decides
(dialplan/extensions.conf; docs/asterisk.md, "Join tokens"): an INVITE for
``conf-<id>`` without one, with a forged, tampered or expired one, or with one the
module made for another conference or another Call-ID is answered 403 and never
reaches ``ConfBridge()`` (AMI ``ConfbridgeList`` is empty, no ``ConfbridgeJoin``);
a token made by the module's code for that leg is bridged.  The keys and the
expected MACs never appear in Asterisk's or Kamailio's log.

The second half goes through the real Kamailio + module (tests/asterisk/stack.py):
a participant's join is bridged although it carries a bogus token of its own (the
module strips it and adds its own), and the attack of the issue, an INVITE for
``conf%2D<id>`` that Kamailio relays to Asterisk as "another request", is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from secconf.asterisk.ami import AmiClient, AmiError, AmiSettings
from secconf.asterisk.config import MIXER_TOKEN_KEY_FILE
from secconf.client.phone import SdesPhone
from secconf.client.sip import SipRequestFailed, UserAgent
from secconf.core.mixer_token import HEADER, MixerTokenKeys, make_token, token_message
from secconf.lab.services.kamailio import KAMAILIO, KamailioProcess
from secconf.lab.services.process import ServiceError
from secconf.store import generate_key_file
from tests.asterisk.participants import audio_sdp
from tests.asterisk.support import (  # noqa: F401 - `stack` is the module's fixture
    ALICE,
    BOB,
    Stack,
    conference_of,
    stack,
)
from tests.fixtures.asterisk_server import AsteriskServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

REFUSED = {
    "shape": "refused: no token of the expected shape",
    "mac": "refused: the token does not match this conference and call",
    "expired": "refused: the token has expired",
}


def new_conference() -> str:
    return secrets.token_hex(8)


def new_call_id() -> str:
    return f"{secrets.token_hex(12)}@127.0.0.1"


def ami_client(server: AsteriskServer) -> AmiClient:
    return AmiClient(
        AmiSettings(
            port=server.ami_port,
            username=server.ami_user,
            secret=server.ami_secret,
            connect_timeout=2.0,
            action_timeout=2.0,
        )
    )


def keys_of(server: AsteriskServer) -> MixerTokenKeys:
    return MixerTokenKeys.derive(server.mixer_token_secret())


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


async def invite(
    ua: UserAgent, server: AsteriskServer, conference: str, call_id: str, token: str | None
) -> int:
    """INVITE conf-<conference> straight to Asterisk; the final status (200: BYE sent)."""
    headers = [] if token is None else [(HEADER, token)]
    outgoing = ua.place_call(
        f"sip:conf-{conference}@127.0.0.1:{server.sip_port}",
        audio_sdp(31100, ["0"]),
        extra_headers=headers,
        call_id=call_id,
    )
    try:
        call = await outgoing.answered(5.0)
    except SipRequestFailed as exc:
        return exc.status_code
    await call.bye(timeout=2.0)
    return 200


async def logged(server: AsteriskServer, text: str, timeout: float = 3.0) -> bool:
    """*text* shows up in Asterisk's log (its logger thread writes after the answer)."""
    deadline = time.monotonic() + timeout
    while text not in server.log():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def unkeyed_mac(conference: str, call_id: str, expiry: int) -> str:
    """The MAC as the dialplan would compute it with an empty key file (FILE() gives "")."""
    inner = hashlib.sha1(token_message(conference, call_id, expiry)).hexdigest()  # noqa: S324
    return hashlib.sha1(inner.encode()).hexdigest()  # noqa: S324


def secrets_of(server: AsteriskServer) -> list[str]:
    """Every form of the shared secret that must never be logged."""
    keys = keys_of(server)
    secret = server.mixer_token_secret()
    return [secret.hex(), keys.inner.decode(), keys.outer.decode(), keys.key_file_text()]


def test_direct_invites_without_the_modules_token_are_refused_and_never_bridged(
    asterisk_server: AsteriskServer,
) -> None:
    keys = keys_of(asterisk_server)
    other_keys = MixerTokenKeys.derive(secrets.token_bytes(32))

    async def scenario() -> None:
        ami = ami_client(asterisk_server)
        joins: list[dict[str, str]] = []
        ami.on_event("ConfbridgeJoin", joins.append)
        await ami.start()
        ua = await UserAgent.start("127.0.0.1", identity="sip:mallory@example.com")
        refused: dict[str, str] = {}  # case -> conference
        expected_macs: list[str] = []
        try:
            now = time.time()
            cases: dict[str, tuple[Callable[[str, str], str | None], str]] = {
                "no token": (lambda conf, cid: None, "shape"),
                "empty token": (lambda conf, cid: "", "shape"),
                "random MAC": (lambda conf, cid: f"{int(now) + 30}.{secrets.token_hex(20)}", "mac"),
                "another secret": (
                    lambda conf, cid: make_token(other_keys, conf, cid, now, 30), "mac"),
                "expired": (lambda conf, cid: make_token(keys, conf, cid, now - 120, 30), "expired"),
                "another conference": (
                    lambda conf, cid: make_token(keys, new_conference(), cid, now, 30), "mac"),
                "another Call-ID": (
                    lambda conf, cid: make_token(keys, conf, new_call_id(), now, 30), "mac"),
                "expiry moved later": (
                    lambda conf, cid: str(int(now) + 3600) + make_token(keys, conf, cid, now, 30)[10:],
                    "mac"),
                "keyless MAC": (
                    lambda conf, cid: f"{int(now) + 30}.{unkeyed_mac(conf, cid, int(now) + 30)}",
                    "mac"),
                "upper-case MAC": (
                    lambda conf, cid: make_token(keys, conf, cid, now, 30).upper(), "shape"),
                "expression injection": (lambda conf, cid: '1" = "1" | "1', "shape"),
                "two tokens in one": (
                    lambda conf, cid: make_token(keys, conf, cid, now, 30) + ","
                    + make_token(keys, conf, cid, now, 30), "shape"),
            }  # fmt: skip
            for case, (make, reason) in cases.items():
                conference, call_id = new_conference(), new_call_id()
                token = make(conference, call_id)
                if token is not None and len(token) == 51:
                    expected_macs.append(make_token(keys, conference, call_id, now, 30)[11:])
                status = await invite(ua, asterisk_server, conference, call_id, token)
                assert status == 403, (case, status)
                refused[case] = conference
                line = f"secconf: join of {conference} {REFUSED[reason]}"
                assert await logged(asterisk_server, line), case
            # The module's own token for the leg: bridged.
            conference, call_id = new_conference(), new_call_id()
            good = ua.place_call(
                f"sip:conf-{conference}@127.0.0.1:{asterisk_server.sip_port}",
                audio_sdp(31102, ["0"]),
                extra_headers=[(HEADER, make_token(keys, conference, call_id, time.time(), 30))],
                call_id=call_id,
            )
            call = await good.answered(5.0)
            try:
                deadline = time.monotonic() + 5.0
                while not joins and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                members = await ami.confbridge_list(conference)
                assert [m["Conference"] for m in joins] == [conference]
                assert len(members) == 1
                assert members[0]["Channel"].startswith("PJSIP/kamailio-")  # identified by address
            finally:
                await call.bye(timeout=2.0)
            for case, refused_conference in refused.items():
                assert await ami.confbridge_list(refused_conference) == [], case
            assert not set(await ami.confbridge_rooms()) & set(refused.values())
            # The watcher's AMI account cannot read the key file (FILE() is "dangerous").
            try:
                value = await ami.getvar("", f"FILE(/etc/asterisk/{MIXER_TOKEN_KEY_FILE})")
            except AmiError:
                value = ""
            assert keys.inner.decode() not in value
            assert keys.outer.decode() not in value
        finally:
            await ua.close()
            await ami.close()
        log = asterisk_server.log()
        for secret in secrets_of(asterisk_server):
            assert secret not in log
        for mac in expected_macs:
            assert mac not in log

    run(scenario)


def test_a_missing_key_file_refuses_every_join(asterisk_server: AsteriskServer) -> None:
    """Without its keys the dialplan would compute an unkeyed MAC: it refuses instead."""
    key_file = asterisk_server.etc / MIXER_TOKEN_KEY_FILE
    saved = key_file.read_bytes()
    keys = keys_of(asterisk_server)

    async def scenario() -> None:
        ua = await UserAgent.start("127.0.0.1", identity="sip:mallory@example.com")
        try:
            key_file.unlink()
            now = int(time.time())
            for make in (
                lambda conf, cid: f"{now + 30}.{unkeyed_mac(conf, cid, now + 30)}",
                lambda conf, cid: make_token(keys, conf, cid, now, 30),
            ):
                conference, call_id = new_conference(), new_call_id()
                status = await invite(
                    ua, asterisk_server, conference, call_id, make(conference, call_id)
                )
                assert status == 403
            assert await logged(
                asterisk_server, "secconf-mixer-token.key is missing or not 128 characters"
            )
        finally:
            key_file.write_bytes(saved)
            key_file.chmod(0o600)
            await ua.close()

    run(scenario)


def test_through_kamailio_only_the_modules_joins_are_bridged(stack: Stack) -> None:  # noqa: F811
    asterisk = stack.asterisk
    keys = keys_of(asterisk)

    async def scenario() -> None:
        ami = ami_client(asterisk)
        await ami.start()
        alice = await SdesPhone.start(ALICE)
        bob = await SdesPhone.start(BOB)
        mallory = await UserAgent.start("127.0.0.1", identity=ALICE)
        conference = ""
        try:
            # A participant's own X-Secconf-Token is replaced by the module's: bridged.
            bogus = f"{int(time.time()) + 30}.{'0' * 40}"
            call = await alice.ua.invite(
                stack.target("conf-factory"), alice.offer(), timeout=5.0,
                extra_headers=[("P-Asserted-Identity", f"<{ALICE}>"), (HEADER, bogus)],
            )  # fmt: skip
            alice.call = call
            conference = conference_of(call)
            await bob.invite(stack.target(f"conf-{conference}"), asserted=BOB)
            deadline = time.monotonic() + 5.0
            while len(await ami.confbridge_list(conference)) < 2:
                assert time.monotonic() < deadline, "alice and bob not both bridged"
                await asyncio.sleep(0.05)
            # The attack: conf%2D<id> is not a conference URI for the module, so
            # Kamailio relays it as another request to its Request-URI, Asterisk, whose
            # dialplan decodes it to conf-<id>.  Refused (by the token check, or by
            # Kamailio once it no longer relays such requests); nobody new is bridged.
            victim = new_conference()
            for user, token in ((f"conf%2D{conference}", None), (f"conf%2D{victim}", None),
                                (f"conf%2D{victim}", make_token(keys, conference, "x@y",
                                                                 time.time(), 30))):  # fmt: skip
                with pytest.raises(SipRequestFailed) as refused:
                    await mallory.invite(
                        f"sip:{user}@127.0.0.1:{asterisk.sip_port}",
                        audio_sdp(31104, ["0"]),
                        extra_headers=[
                            ("Route", f"<sip:127.0.0.1:{stack.kamailio.port};lr>"),
                            ("P-Asserted-Identity", f"<{ALICE}>"),
                            *([(HEADER, token)] if token else []),
                        ],
                        timeout=5.0,
                    )
                # Kamailio reads conf%2D<id> as conf-<id> (RFC 3261 §19.1.4) and refuses the
                # clear offer itself (488); were it relayed, the token check would (403).
                assert refused.value.status_code in (403, 404, 488), user
                response = refused.value.response
                if response is not None and response.get("server") == "secconf-mixer":
                    # It reached Asterisk (Kamailio relayed it): the token check refused it.
                    assert refused.value.status_code == 403
                    reason = "no token of the expected shape" if token is None else "the token does"
                    assert await logged(asterisk, f"secconf: join of {user[7:]} refused: {reason}")
            assert len(await ami.confbridge_list(conference)) == 2
            assert await ami.confbridge_list(victim) == []
        finally:
            for phone in (alice, bob):  # hang up: leave no member behind for later tests
                if phone.call is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(phone.call.bye(timeout=2.0), 3.0)
                await phone.close()
            with contextlib.suppress(Exception):
                deadline = time.monotonic() + 5.0
                while conference in await ami.confbridge_rooms() and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            await mallory.close()
            await ami.close()
        for secret in secrets_of(asterisk):
            assert secret not in asterisk.log()
            assert secret not in stack.kamailio.log()

    run(scenario)


def test_kamailio_does_not_start_without_a_private_secret(tmp_path: Path) -> None:
    """Fail closed at start: the module's mod_init refuses a secret others may read."""
    if not os.access(KAMAILIO, os.X_OK):
        pytest.fail(f"kamailio not found at {KAMAILIO}")
    kek = tmp_path / "kek"
    generate_key_file(kek)
    secret_file = tmp_path / "mixer-token"
    secret = generate_key_file(secret_file, "mixer token secret")
    secret_file.chmod(0o644)
    settings = (
        '[focus]\ndomain = "conf.test.invalid"\n[upstream]\nuri = "sip:127.0.0.1:9"\n'
        f'[redis]\nurl = "redis://127.0.0.1:1/0"\nkek_file = "{kek}"\n'
    )
    kamailio = KamailioProcess(
        tmp_path / "kamailio",
        settings,
        env={"SECCONF_MIXER_TOKEN_FILE": str(secret_file)},
        deadline=10.0,
    )
    with pytest.raises(ServiceError, match="exited") as failed:
        kamailio.start()
    assert "token_secret_file" in kamailio.log()
    assert "chmod 600" in kamailio.log()
    assert secret.hex() not in kamailio.log() + str(failed.value)
    # The same file made private: it starts.
    secret_file.chmod(0o600)
    try:
        kamailio.start()
        assert kamailio.running
    finally:
        kamailio.stop()
