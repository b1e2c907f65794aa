"""What a replacement call must show: the phone back in the bridge on the new epoch.

The watcher (policy ``replace``) hangs up a leg that did not follow a rekey and
dials the phone's identity back in (``PJSIP/kamailio-out/<identity>``; Kamailio
finds the contact the phone REGISTERed, keys the offer with the conference's
current epoch and opens an edge leg for it); the phone auto-answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from secconf.lab.phones.phone import Phone
from tests.interop.audio import assert_hears
from tests.interop.conftest import PREFIX, InteropStack


async def expect_replacement(
    stack: InteropStack,
    conference: str,
    phone: Phone,
    since: int,
    uniqueid: str,
    *,
    old_call_id: str,
    epoch: int,
    tones: tuple[float, ...],
    timeout: float = 15.0,
) -> dict[str, Any]:
    """The phone is back in the bridge on *epoch* and hears *tones*; returns its edge leg.

    1. an incoming call after *since* (:meth:`Phone.position`), auto-answered
       (the phone's own output);
    2. the bridge member *uniqueid* (the report's ``replaced`` value) is in the
       watcher's roster in Redis with a SIP Call-ID other than *old_call_id*;
    3. that dialog's record is a dial-out on *epoch*, and so is its edge leg,
       which opens the phone's SRTP (``rtp_in`` grows, no new ``auth_failures``);
    4. what the phone records afterwards carries *tones* (decrypted under *epoch*).
    """
    await asyncio.to_thread(phone.wait_incoming, since, timeout)
    deadline = time.monotonic() + timeout
    call_id = None
    while call_id is None:
        store = stack.store()
        try:
            roster = store.client.hgetall(f"{PREFIX}:roster:{conference}")
        finally:
            store.client.close()
        for value in roster.values():
            member = json.loads(value)
            if member["uniqueid"] == uniqueid and member.get("call_id"):
                call_id = member["call_id"]
        if call_id is None:
            assert time.monotonic() < deadline, f"{phone} ({uniqueid}) is not back in the bridge"
            await asyncio.sleep(0.1)
    assert call_id != old_call_id
    store = stack.store()
    try:
        dialog = store.dialog(conference, call_id)
    finally:
        store.client.close()
    assert dialog is not None, call_id
    assert dialog.dialout, dialog
    assert dialog.epoch == epoch, dialog
    legs = {leg["leg"]: leg for leg in stack.conference(conference)["legs"]}
    leg = legs[dialog.leg]
    assert leg["epoch"] == epoch, leg
    mark, before = phone.mark(), leg["counters"]
    # The phone sends as soon as it has sent its 200 OK; the edge learns the phone's key
    # when that 200 passes Kamailio (the dial-out leg starts with a throw-away key), so
    # the first few packets may fail authentication (seen over TLS: 3, i.e. 60 ms).
    # Not more than half a second of them, and none once the call is up.
    assert before["auth_failures"] <= 25, before
    await asyncio.sleep(2.0)
    after = {x["leg"]: x for x in stack.conference(conference)["legs"]}[dialog.leg]["counters"]
    assert after["rtp_in"] - before["rtp_in"] >= 80, after
    assert after["auth_failures"] == before["auth_failures"], after
    rate, samples = phone.heard(mark)
    assert_hears(samples, tones, f"{phone} after its replacement call", rate)
    return leg
