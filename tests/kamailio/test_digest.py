"""Digest authentication (SDES mode) through the real Kamailio and Redis.

Requests without a trusted asserted identity are challenged (407, SHA-256 and
MD5); users' HA1 values are wrapped in Redis (``secconf.store.sip_users``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from secconf.client.sip import SipRequestFailed, UserAgent
from secconf.core import digest
from secconf.focus.authenticator import digest_secret
from secconf.store.conferences import connect_blocking
from secconf.store.keywrap import load_key_file
from secconf.store.sip_users import SipUserStore
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.redis_server import RedisServer

from .conftest import ALICE, BOB, Focus, Upstream, _start_focus, offer

pytestmark = pytest.mark.usefixtures("redis_url")

REALM = "example.com"
DIGEST = f"""
[digest]
realm = "{REALM}"
algorithms = ["SHA-256", "MD5"]
nonce_lifetime = 30
"""
PASSWORDS = {ALICE: "alice-secret-1", BOB: "bob-secret-22"}


@pytest.fixture(scope="module")
def digest_focus(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Focus, bytes]]:
    tmp = tmp_path_factory.mktemp("focus-digest")
    running = _start_focus(kamailio_factory, redis_server, tmp, extra=DIGEST)
    yield running, load_key_file(Path(tmp / "kek"))
    running.server.stop()


def _add_users(focus: Focus) -> None:
    client = connect_blocking(focus.redis_server.url, timeout=1.0)
    users = SipUserStore(client, focus.wrapper, focus.prefix)
    for identity, password in PASSWORDS.items():
        users.add(identity, identity[4:].split("@")[0], REALM, password)
    client.close()


def _user(identity: str) -> tuple[str, str]:
    return identity[4:].split("@")[0], PASSWORDS[identity]


def test_challenge_then_create_and_join(digest_focus: tuple[Focus, bytes]) -> None:
    focus, _ = digest_focus
    _add_users(focus)

    async def scenario(upstream: Upstream) -> None:
        alice = await UserAgent.start("127.0.0.1", identity=ALICE)
        bob = await UserAgent.start("127.0.0.1", identity=BOB)
        try:
            # No credentials: 407 with one challenge per algorithm, nothing written.
            before = focus.snapshot(ours_only=True)
            with pytest.raises(SipRequestFailed) as info:
                await alice.invite(focus.target("conf-factory"), offer(), timeout=5)
            response = info.value.response
            assert info.value.status_code == 407
            assert response is not None
            challenges = [digest.parse_challenge(v) for v in response.get_all("Proxy-Authenticate")]
            assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
            assert all(c.realm == REALM and "auth" in c.qop for c in challenges)
            assert "credentials required" in focus.server.refusal(response.get("Call-ID") or "")
            assert focus.snapshot(ours_only=True) == before

            # SHA-256 (the client's first choice): the conference is created.
            call_a = await alice.invite(
                focus.target("conf-factory"), offer(), timeout=5, credentials=_user(ALICE)
            )
            header = call_a.response.get("X-Secconf-Conference")  # type: ignore[union-attr]
            conference = header.split("conf-", 1)[1].split("@", 1)[0]  # type: ignore[union-attr]
            store, client = focus.store()
            assert store.members(conference) == {ALICE: 1}
            # The focus consumes its credentials (RFC 3261 §22.3): none reach the mixer.
            assert upstream.invites[-1].request.get("Proxy-Authorization") is None

            # MD5 for an old phone: answer the MD5 challenge by hand.
            target = focus.target(f"conf-{conference}")
            call_id = "md5-join@127.0.0.1"
            first = bob.place_call(target, offer(port=30002), call_id=call_id, from_tag="md5tag")
            with pytest.raises(SipRequestFailed) as info:
                await first.answered(5)
            md5 = next(
                digest.parse_challenge(v)
                for v in info.value.response.get_all("Proxy-Authenticate")  # type: ignore[union-attr]
                if "MD5" in v
            )
            username, password = _user(BOB)
            authorization = digest.respond(
                md5, username=username, password=password, method="INVITE", uri=target,
                cnonce="0a4f113b",
            )  # fmt: skip
            second = bob.place_call(
                target, offer(port=30002), call_id=call_id, from_tag="md5tag", cseq=2,
                extra_headers=[("Proxy-Authorization", authorization)],
            )  # fmt: skip
            call_b = await second.answered(5)
            assert store.members(conference) == {ALICE: 1, BOB: 1}
            await call_b.bye(timeout=5)
            await call_a.bye(timeout=5)
            client.close()
        finally:
            await alice.close()
            await bob.close()

    focus.run(scenario)


def test_wrong_password_is_403_and_stale_nonce_is_challenged_again(
    digest_focus: tuple[Focus, bytes],
) -> None:
    focus, kek = digest_focus
    _add_users(focus)

    async def scenario(upstream: Upstream) -> None:
        alice = await UserAgent.start("127.0.0.1", identity=ALICE)
        try:
            before = focus.snapshot(ours_only=True)
            with pytest.raises(SipRequestFailed) as info:
                await alice.invite(
                    focus.target("conf-factory"), offer(), timeout=5,
                    credentials=("alice", "not-the-password"),
                )  # fmt: skip
            assert info.value.status_code == 403
            assert "digest authentication failed" in focus.server.refusal(
                info.value.response.get("Call-ID") or ""
            )  # type: ignore[union-attr]
            # An unknown user gets the same answer (no user enumeration).
            with pytest.raises(SipRequestFailed) as info:
                await alice.invite(
                    focus.target("conf-factory"), offer(), timeout=5,
                    credentials=("mallory", "whatever-password"),
                )  # fmt: skip
            assert info.value.status_code == 403
            assert focus.snapshot(ours_only=True) == before
            assert upstream.invites == []

            # A nonce the focus issued 100 s ago for this call: stale -> a new challenge.
            call_id = "stale-nonce@127.0.0.1"
            flow = digest.flow_binding(call_id, "127.0.0.1", alice.local_port, "udp")
            old = digest.make_nonce(digest_secret(kek), int(time.time()) - 100, flow, bytes(12))
            stale = digest.DigestChallenge(REALM, old, "SHA-256", ("auth",), False, None)
            target = focus.target("conf-factory")
            authorization = digest.respond(
                stale, username="alice", password=PASSWORDS[ALICE], method="INVITE",
                uri=target, cnonce="abcdef01",
            )  # fmt: skip
            attempt = alice.place_call(
                target, offer(), call_id=call_id, from_tag="stale",
                extra_headers=[("Proxy-Authorization", authorization)],
            )  # fmt: skip
            with pytest.raises(SipRequestFailed) as info:
                await attempt.answered(5)
            assert info.value.status_code == 407
            fresh = [
                digest.parse_challenge(v)
                for v in info.value.response.get_all("Proxy-Authenticate")  # type: ignore[union-attr]
            ]
            assert all(c.stale for c in fresh)
            # A nonce minted for another call is not accepted either (new challenge, not stale).
            another = digest.flow_binding("another-call", "127.0.0.1", alice.local_port, "udp")
            other = digest.make_nonce(digest_secret(kek), int(time.time()), another, bytes(12))
            forged = digest.respond(
                digest.DigestChallenge(REALM, other, "SHA-256", ("auth",), False, None),
                username="alice", password=PASSWORDS[ALICE], method="INVITE", uri=target,
                cnonce="abcdef02",
            )  # fmt: skip
            attempt = alice.place_call(
                target, offer(), extra_headers=[("Proxy-Authorization", forged)]
            )
            with pytest.raises(SipRequestFailed) as info:
                await attempt.answered(5)
            assert info.value.status_code == 407
            assert focus.snapshot(ours_only=True) == before
        finally:
            await alice.close()

    focus.run(scenario)
