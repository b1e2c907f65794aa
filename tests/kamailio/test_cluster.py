"""One focus on Redis Cluster, one behind Sentinel, and several Kamailio nodes on one Redis.

* Cluster: the real Kamailio with ``redis.url = redis+cluster://...`` (three real
  masters), the real media edge: create, join, REFER, a rekey re-INVITE from the
  mixer, BYEs; every key of the conference is in the slot of ``{id}``; the
  mixer's dial-out (its 2xx, a rekey re-INVITE from the mixer, the phone's BYE).
* Sentinel: the module reaches the master through ``redis+sentinel://.../secconf``.
* Two nodes: two Kamailio processes (different ports, same Redis, same mixer)
  act as one focus.  A conference created through node A is joined through
  node B; in-dialog requests sent to the other node than the one that
  record-routed the INVITE (the route set rewritten, as a shared name or a
  load balancer would do) find the conference from the Route's ``sc-conf``
  parameter; an SSRC taken through one node is refused through the other; a
  TRANSFER_INIT accepted by A is refused as a replay by B (KMS mode).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from redis.cluster import key_slot

from secconf.client.sip import Call, SipRequestFailed, UserAgent
from secconf.core.sdes import CryptoAttribute
from secconf.core.sdp import SessionDescription
from tests.fixtures.edge_server import RunningEdge
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.ports import free_udp_port
from tests.fixtures.redis_cluster import RedisClusterServers, RedisSentinelServers
from tests.fixtures.redis_server import RedisServer

from .conftest import (
    ALICE,
    BOB,
    CAROL,
    Focus,
    KmsFocus,
    MixingUpstream,
    Upstream,
    _start_focus,
    offer,
    pai,
)
from .kms_participants import _create as _kms_create
from .kms_participants import _invite as _kms_invite
from .kms_participants import _offer as _kms_offer
from .kms_participants import _refused as _kms_refused
from .media import SdesParticipant
from .support import MIXER_OFFER, _conference_id, _mixer_calls, _rekey, dial

#: Bob's phone for the dial-out on the cluster: a fixed contact, no REGISTER.
BOB_PORT = free_udp_port()


@pytest.fixture(scope="module")
def cluster_focus(
    kamailio_factory: KamailioFactory,
    redis_cluster: RedisClusterServers,
    tmp_path_factory: pytest.TempPathFactory,
    media_edge: RunningEdge,
) -> Iterator[Focus]:
    """Kamailio on the three-master cluster (``redis+cluster://``) with the real edge."""
    redis_cluster.ensure_ready()
    running = _start_focus(
        kamailio_factory,
        redis_cluster,
        tmp_path_factory.mktemp("focus-cluster"),
        env={"SECCONF_REDIS_URL": redis_cluster.url, **media_edge.focus_env},
        extra=f'[dialout]\ncontacts = {{ "{BOB}" = "sip:bob@127.0.0.1:{BOB_PORT}" }}\n',
    )
    yield running
    running.server.stop()


def _second_node(factory: KamailioFactory, first: Focus) -> Focus:
    """Another Kamailio with the same settings and environment (same Redis, mixer, edge, KEK)."""
    server = factory.start(first.server.settings_path.read_text(), env=first.server.extra_env)
    return Focus(server, first.redis_server, first.upstream_port, first.wrapper)


@pytest.fixture(scope="module")
def two_nodes(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Focus, Focus]]:
    """Nodes A and B of one focus: one Redis, one mixer stand-in, no edge."""
    a = _start_focus(kamailio_factory, redis_server, tmp_path_factory.mktemp("node-a"))
    b = _second_node(kamailio_factory, a)
    yield a, b
    b.server.stop()
    a.server.stop()


def _via(call: Call, node: Focus) -> None:
    """Send the dialog's next requests to *node*: its route set's host:port rewritten."""
    rewritten = []
    for route in call.dialog.route_set:
        head, sep, rest = route.partition("127.0.0.1:")
        port = rest.split(";", 1)[0].split(">", 1)[0]
        rewritten.append(f"{head}{sep}{node.server.port}{rest[len(port) :]}" if sep else route)
    assert rewritten != call.dialog.route_set or not call.dialog.route_set
    call.dialog.route_set = rewritten


def _slots(focus: Focus, conference: str) -> set[int]:
    _, client = focus.store()
    try:
        keys = [k for k in client.scan_iter(match=f"{focus.prefix}:*") if conference.encode() in k]
    finally:
        client.close()
    assert keys
    return {key_slot(k) for k in keys}


# -- Redis Cluster -----------------------------------------------------------------------


def test_conference_on_redis_cluster(
    cluster_focus: Focus, redis_cluster: RedisClusterServers
) -> None:
    """Create, join, REFER, a rekey re-INVITE and BYEs through Kamailio on a real cluster."""
    focus = cluster_focus
    redis_cluster.flush()

    async def scenario(upstream: Upstream) -> None:
        assert isinstance(upstream, MixingUpstream)
        alice = await SdesParticipant.start(ALICE)
        bob = await SdesParticipant.start(BOB)
        try:
            call_a = await alice.invite(focus.target("conf-factory"), ALICE)
            conference = _conference_id(call_a)
            call_b = await bob.invite(focus.target(f"conf-{conference}"), BOB)
            mixer = await _mixer_calls(upstream, 2)
            store, client = focus.store()
            assert store.members(conference) == {ALICE: 1, BOB: 1}
            assert store.dialog(conference, call_b.call_id).state == "up"  # type: ignore[union-attr]
            # In-dialog REFER (Bob adds Carol): 202 and one stream entry, no lookup by Call-ID.
            response = await call_b.refer(f"<{CAROL}>", timeout=5, extra_headers=pai(BOB))
            assert response.status == 202
            assert [f["target"] for _, f in store.refers(conference)] == [CAROL]
            # A rekey, and the mixer's re-INVITE carries the new epoch's key to Alice.
            old = alice.group
            assert await asyncio.to_thread(_rekey, focus, conference) == 2
            await mixer[call_a.call_id].reinvite(upstream.mixer_sdp(call_a.call_id), timeout=5)
            keyed = SessionDescription.parse(alice.reoffers[-1])
            crypto = CryptoAttribute.parse(keyed.media[0].attributes("crypto")[0] or "")
            new_key = store.group_key(conference)
            assert crypto.key_params[0].key == new_key.key != old[1]  # type: ignore[index]
            assert store.dialog(conference, call_a.call_id).epoch == 2  # type: ignore[union-attr]
            # Every key of this conference (dialogs, streams, epochs, ...) in one slot.
            assert _slots(focus, conference) == {key_slot(conference.encode())}
            await call_b.bye(timeout=5)
            assert store.members(conference) == {ALICE: 1}
            await call_a.bye(timeout=5)
            info = store.get(conference)
            assert info is not None
            assert info.state == "ended"
            client.close()
        finally:
            await alice.close()
            await bob.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


def test_dialout_on_redis_cluster(cluster_focus: Focus, redis_cluster: RedisClusterServers) -> None:
    """The mixer's dial-out on the cluster: its Record-Route names the conference.

    The 2xx (``dialout_answered``: dialog, conference, SSRCs in one slot), a rekey
    re-INVITE from the mixer (the dialog's caller) and the phone's BYE all find
    the dial-out dialog under ``{id}`` through the Route's ``sc-conf``.
    """
    focus = cluster_focus
    redis_cluster.flush()

    async def scenario(upstream: Upstream) -> None:
        mixer = upstream.ua
        assert mixer is not None
        alice = await SdesParticipant.start(ALICE)
        bob = await SdesParticipant.start(
            BOB, await UserAgent.start("127.0.0.1", BOB_PORT, identity=BOB)
        )
        bob.accept_calls = True
        store, client = focus.store()
        try:
            call_a = await alice.invite(focus.target("conf-factory"), ALICE)
            conference = _conference_id(call_a)
            mixer_call: Call = await dial(mixer, focus, BOB, conference)
            bob_call = await bob.ua.next_call(5)
            bob.call = bob_call
            assert bob.group == alice.group
            routes = bob_call.invite.get_all("Record-Route")
            assert any(f"sc-conf={conference}" in r for r in routes), routes
            dialog = store.dialog(conference, mixer_call.call_id)
            assert dialog is not None
            assert (dialog.state, dialog.dialout, dialog.ssrcs) == ("up", True, (bob.media.ssrc,))
            assert bob.media.ssrc in store.ssrcs(conference)
            # A rekey; the mixer's re-INVITE (it is the caller here) keys Bob's leg.
            assert await asyncio.to_thread(_rekey, focus, conference) == 2
            await mixer_call.reinvite(MIXER_OFFER.replace(b"1 1 IN", b"1 2 IN"), timeout=5)
            new_key = store.group_key(conference)
            assert bob.group is not None
            assert bob.group[1:] == (new_key.key, new_key.salt)
            assert store.dialog(conference, mixer_call.call_id).epoch == 2  # type: ignore[union-attr]
            assert _slots(focus, conference) == {key_slot(conference.encode())}
            # The phone hangs up (BYE from the callee side): the dial-out dialog goes.
            await bob_call.bye(timeout=5)
            assert store.dialog(conference, mixer_call.call_id) is None
            assert store.members(conference) == {ALICE: 1}
            assert bob.media.ssrc not in store.ssrcs(conference)
            await call_a.bye(timeout=5)
            assert store.get(conference).state == "ended"  # type: ignore[union-attr]
        finally:
            client.close()
            await alice.close()
            await bob.close()

    focus.run(scenario)


def test_cluster_master_down_is_503_fast_and_kamailio_recovers(
    cluster_focus: Focus, redis_cluster: RedisClusterServers
) -> None:
    """The master owning a conference's slot stops: a join is 503 in under a second."""
    focus = cluster_focus
    redis_cluster.flush()

    async def scenario(upstream: Upstream) -> None:
        alice = await UserAgent.start("127.0.0.1", identity=ALICE)
        bob = await UserAgent.start("127.0.0.1", identity=BOB)
        try:
            call_a = await alice.invite(
                focus.target("conf-factory"), offer(), extra_headers=pai(ALICE), timeout=5
            )
            header = call_a.response.get("X-Secconf-Conference")  # type: ignore[union-attr]
            assert header is not None
            conference = header.split("conf-", 1)[1].split("@", 1)[0]
            redis_cluster.node_for_slot(key_slot(conference.encode())).stop()
            try:
                started = time.monotonic()
                with pytest.raises(SipRequestFailed) as info:
                    await bob.invite(
                        focus.target(f"conf-{conference}"),
                        offer(),
                        extra_headers=pai(BOB),
                        timeout=5,
                    )
                assert info.value.status_code == 503
                assert time.monotonic() - started < 1.0
            finally:
                await asyncio.to_thread(redis_cluster.ensure_ready)
            # Back (that master's data is gone: no persistence): the focus serves again.
            call_b = await alice.invite(
                focus.target("conf-factory"), offer(), extra_headers=pai(ALICE), timeout=5
            )
            await call_b.bye(timeout=5)
        finally:
            await alice.close()
            await bob.close()

    focus.run(scenario)


# -- Redis Sentinel ----------------------------------------------------------------------


def test_module_works_through_a_sentinel_url(
    kamailio_factory: KamailioFactory,
    redis_sentinel: RedisSentinelServers,
    redis_sentinel_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    focus = _start_focus(
        kamailio_factory,
        redis_sentinel,
        tmp_path_factory.mktemp("focus-sentinel"),
        env={"SECCONF_REDIS_URL": redis_sentinel_url},
    )
    try:

        async def scenario(upstream: Upstream) -> None:
            alice = await UserAgent.start("127.0.0.1", identity=ALICE)
            bob = await UserAgent.start("127.0.0.1", identity=BOB)
            try:
                call_a = await alice.invite(
                    focus.target("conf-factory"), offer(), extra_headers=pai(ALICE), timeout=5
                )
                header = call_a.response.get("X-Secconf-Conference")  # type: ignore[union-attr]
                assert header is not None
                conference = header.split("conf-", 1)[1].split("@", 1)[0]
                call_b = await bob.invite(
                    focus.target(f"conf-{conference}"), offer(), extra_headers=pai(BOB), timeout=5
                )
                store, client = focus.store()  # through the sentinel too
                assert store.members(conference) == {ALICE: 1, BOB: 1}
                # ... and the state is on the master the sentinel names.
                import redis as redis_py

                direct = redis_py.Redis("127.0.0.1", redis_sentinel.master.port)
                assert direct.exists(store.conference_key(conference))
                direct.close()
                await call_b.bye(timeout=5)
                await call_a.bye(timeout=5)
                assert store.get(conference).state == "ended"  # type: ignore[union-attr]
                client.close()
            finally:
                await alice.close()
                await bob.close()

        focus.run(scenario)
    finally:
        focus.server.stop()


# -- several nodes, one Redis ------------------------------------------------------------


def test_two_nodes_act_as_one_focus(two_nodes: tuple[Focus, Focus], redis_url: str) -> None:
    a, b = two_nodes

    def ssrc_offer(ssrc: int) -> bytes:
        return offer(extra=f"a=ssrc:{ssrc} cname:x")

    async def scenario(upstream: Upstream) -> None:
        alice = await UserAgent.start("127.0.0.1", identity=ALICE)
        bob = await UserAgent.start("127.0.0.1", identity=BOB)
        carol = await UserAgent.start("127.0.0.1", identity=CAROL)
        try:
            call_a = await alice.invite(
                a.target("conf-factory"), ssrc_offer(1111), extra_headers=pai(ALICE), timeout=5
            )
            header = call_a.response.get("X-Secconf-Conference")  # type: ignore[union-attr]
            assert header is not None
            conference = header.split("conf-", 1)[1].split("@", 1)[0]
            # Created through A, joined through B.
            call_b = await bob.invite(
                b.target(f"conf-{conference}"), ssrc_offer(4242), extra_headers=pai(BOB), timeout=5
            )
            store, client = a.store()
            assert store.members(conference) == {ALICE: 1, BOB: 1}
            group = CryptoAttribute.parse(
                SessionDescription.parse(call_b.remote_sdp).media[0].attributes("crypto")[0] or ""
            )
            # An SSRC taken through B is refused through A (488), and nothing changes.
            before = a.snapshot(ours_only=True)
            with pytest.raises(SipRequestFailed) as refused:
                await carol.invite(
                    a.target(f"conf-{conference}"),
                    ssrc_offer(4242),
                    extra_headers=pai(CAROL),
                    timeout=5,
                )
            assert refused.value.status_code == 488
            assert a.snapshot(ours_only=True) == before
            # Bob's re-INVITE (his dialog was record-routed by B) through A: keyed with
            # the conference's group key, the mixer gets it clear.
            _via(call_b, a)
            response = await call_b.reinvite(offer(), timeout=5)
            answer = SessionDescription.parse(response.body)
            keyed = CryptoAttribute.parse(answer.media[0].attributes("crypto")[0] or "")
            assert keyed.key_params[0].key == group.key_params[0].key
            assert b"a=crypto" not in upstream.invites[-1].request.body
            # Alice's BYE (record-routed by A) through B releases her dialog.
            _via(call_a, b)
            await call_a.bye(timeout=5)
            assert store.members(conference) == {BOB: 1}
            assert store.ssrcs(conference) == {4242}
            await call_b.bye(timeout=5)
            assert store.get(conference).state == "ended"  # type: ignore[union-attr]
            client.close()
        finally:
            await alice.close()
            await bob.close()
            await carol.close()

    a.run(scenario)


def test_in_dialog_request_naming_no_conference_is_refused(
    two_nodes: tuple[Focus, Focus], redis_url: str
) -> None:
    """A re-INVITE whose Route lost its ``sc-conf`` (or names another conference): no relay."""
    a, _ = two_nodes

    async def scenario(upstream: Upstream) -> None:
        alice = await UserAgent.start("127.0.0.1", identity=ALICE)
        try:
            call_a = await alice.invite(
                a.target("conf-factory"), offer(), extra_headers=pai(ALICE), timeout=5
            )
            seen = len(upstream.invites)
            route = call_a.dialog.route_set[0]
            assert ";sc-conf=" in route
            mac = route.split(";sc-mac=")[1][:32]
            for changed, reason in (
                (route.replace(";sc-conf=", ";other="), "not a conference dialog"),
                # Another conference, with or without the dialog's MAC: the MAC fails.
                (route.split(";sc-conf=")[0] + ";sc-conf=0123456789abcdef>", "Record-Route not"),
                (route.split(";sc-conf=")[0] + f";sc-conf=0123456789abcdef;sc-mac={mac}>",
                 "Record-Route not"),
            ):  # fmt: skip
                call_a.dialog.route_set = [changed]
                with pytest.raises(SipRequestFailed) as info:
                    await call_a.reinvite(offer(), timeout=5)
                assert info.value.status_code == 403
                refusal = info.value.response
                assert refusal is not None
                assert reason in a.server.refusal(refusal.get("Call-ID") or "")
            assert len(upstream.invites) == seen  # the mixer saw none of them
            # (the 481 ended the dialog on Alice's side; the conference is flushed away)
        finally:
            await alice.close()

    a.run(scenario)


def test_transfer_init_accepted_by_one_node_is_a_replay_at_the_other(
    kamailio_factory: KamailioFactory, kms_focus: KmsFocus
) -> None:
    """KMS mode: the replay cache is shared, so node B refuses what node A accepted (403)."""
    other = _second_node(kamailio_factory, kms_focus)
    node_b = KmsFocus(
        other.server,
        kms_focus.redis_server,
        kms_focus.upstream_port,
        kms_focus.wrapper,
        kms=kms_focus.kms,
        proxy=kms_focus.proxy,
        psks=kms_focus.psks,
        edge=kms_focus.edge,
    )
    try:
        conference = _kms_create(kms_focus)
        body, _ = asyncio.run(_kms_offer(kms_focus, BOB))
        assert _kms_invite(kms_focus, f"conf-{conference}", body, sip_identity=BOB) == 200
        _kms_refused(node_b, f"conf-{conference}", body, BOB, 403, "replayed")
        # A fresh TRANSFER_INIT joins through B.
        fresh, _ = asyncio.run(_kms_offer(kms_focus, BOB))
        assert _kms_invite(node_b, f"conf-{conference}", fresh, sip_identity=BOB) == 200
    finally:
        other.server.stop()


def test_create_retransmitted_to_the_other_node_mints_no_second_conference(
    two_nodes: tuple[Focus, Focus], redis_url: str
) -> None:
    """The same create INVITE (byte for byte) to A, then to B (which has no transaction).

    B derives the same conference id from Call-ID and From tag, finds the dialog
    already recorded there and drops the copy: one conference, one INVITE at the
    mixer, no answer from B.
    """
    import socket
    import uuid

    a, b = two_nodes

    async def scenario(upstream: Upstream) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        body = offer()
        invite = (
            f"INVITE sip:conf-factory@127.0.0.1:{a.server.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <{ALICE}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:conf-factory@127.0.0.1:{a.server.port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@127.0.0.1\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:alice@127.0.0.1:{port}>\r\n"
            f"P-Asserted-Identity: <{ALICE}>\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        loop = asyncio.get_running_loop()

        async def answers(timeout: float, node: Focus) -> list[bytes]:
            """What *node* sent us within *timeout* seconds."""
            got: list[bytes] = []
            deadline = loop.time() + timeout
            while loop.time() < deadline:
                try:
                    data, source = await asyncio.wait_for(
                        loop.sock_recvfrom(sock, 65536), max(0.01, deadline - loop.time())
                    )
                except TimeoutError:
                    break
                if source[1] == node.server.port:
                    got.append(data)
            return got

        try:
            await loop.sock_sendto(sock, invite, ("127.0.0.1", a.server.port))
            from_a = await answers(2.0, a)
            assert any(m.startswith(b"SIP/2.0 200") for m in from_a), from_a
            await loop.sock_sendto(sock, invite, ("127.0.0.1", b.server.port))
            assert await answers(1.0, b) == []
            _, client = a.store()
            confs = [k for k in client.scan_iter(match=f"{a.prefix}:conf:*") if k.endswith(b"}")]
            client.close()
            assert len(confs) == 1, confs
            assert len(upstream.invites) == 1
        finally:
            sock.close()

    a.run(scenario)
