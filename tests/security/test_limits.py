"""Issue 12, item 9: concurrent dialogs per identity and REFERs per member are limited.

The secure stack runs with ``dialogs_per_identity = 3`` and ``refers_per_minute = 3``.  Over a
limit the answer is 403 with Retry-After and nothing changes (Redis, the edge, the bridge).
"""

from __future__ import annotations

import asyncio

import pytest

from secconf.client.sip import SipRequestFailed
from tests.kamailio.media import SdesParticipant
from tests.security.conftest import BOB, CAROL, PASSWORDS, SecureStack, tls_phone

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _join_target(secure: SecureStack) -> str:
    return f"sip:conf-{secure.conference}@127.0.0.1:{secure.tls[1]};transport=tls"


def test_a_fourth_concurrent_dialog_is_refused_until_one_ends(secure: SecureStack) -> None:
    """Bob holds one dialog already; two more are fine, the fourth is 403 + Retry-After.

    Joins are counted per identity and conference by the join script itself (the roster's
    count, no extra round trip); creates across conferences (tests/store).
    """

    async def scenario() -> None:
        extra: list[SdesParticipant] = []
        try:
            for _ in range(2):
                phone = await tls_phone(secure.stack, BOB)
                extra.append(phone)
                await phone.invite(_join_target(secure), credentials=("bob", PASSWORDS["bob"]))
            before = await asyncio.to_thread(secure.redis_state)
            edge_before = await asyncio.to_thread(secure.edge_state)
            members_before = await secure.bridge_members_async()
            fourth = await tls_phone(secure.stack, BOB)
            extra.append(fourth)
            with pytest.raises(SipRequestFailed) as info:
                await fourth.invite(_join_target(secure), credentials=("bob", PASSWORDS["bob"]))
            assert info.value.status_code == 403
            response = info.value.response
            assert response is not None
            assert int(response.get("Retry-After") or 0) >= 1
            # Bob is authenticated: he is told why.
            assert "holds 3 dialogs in this conference" in (response.get("Warning") or "")
            # The refused request wrote nothing but its spent digest nonce (docs/kamailio.md).
            after = await asyncio.to_thread(secure.redis_state)
            assert {k: v for k, v in after.items() if b":nonce:" not in k} == {
                k: v for k, v in before.items() if b":nonce:" not in k
            }
            assert await asyncio.to_thread(secure.edge_state) == edge_before
            assert await secure.bridge_members_async() == members_before
            # One ends: the next join is accepted again.
            assert extra[0].call is not None
            await extra[0].call.bye(timeout=5)
            again = await tls_phone(secure.stack, BOB)
            extra.append(again)
            call = await again.invite(_join_target(secure), credentials=("bob", PASSWORDS["bob"]))
            assert call.response is not None
            assert call.response.status == 200
        finally:
            for phone in extra:
                if phone.call is not None and not phone.call.ended.is_set():
                    await phone.call.bye(timeout=5)
                await phone.close()

    secure.run(scenario())


CREDENTIALS = ("alice", PASSWORDS["alice"])


def test_a_fourth_refer_in_a_minute_is_refused(secure: SecureStack) -> None:
    alice = secure.alice
    assert alice is not None
    store = secure.stack.store()

    async def scenario() -> None:
        for _ in range(3):
            response = await alice.call.refer(f"<{CAROL}>", timeout=5, credentials=CREDENTIALS)
            assert response.status == 202
        queued = len(store.refers(secure.conference))
        before = secure.edge_state()
        with pytest.raises(SipRequestFailed) as info:
            await alice.call.refer(f"<{CAROL}>", timeout=5, credentials=CREDENTIALS)
        assert info.value.status_code == 403
        response = info.value.response
        assert response is not None
        assert 1 <= int(response.get("Retry-After") or 0) <= 60
        assert "REFERs a minute" in (response.get("Warning") or "")
        assert len(store.refers(secure.conference)) == queued  # nothing queued
        assert secure.edge_state() == before

    try:
        secure.run(scenario())
    finally:
        store.client.close()
