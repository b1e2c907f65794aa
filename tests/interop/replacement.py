"""What a replacement call must show, ready for when the watcher's ``replace`` policy exists.

Not a test: replacement calls (hang up a leg that did not follow a rekey and dial
the phone back into the bridge with the new key) are being built elsewhere.  Once
``on_failure = "replace"`` is accepted, the interop test keeps everything up to
baresip's ``not-followed`` verdict and, instead of asserting the removal, calls::

    since = baresip.position()        # before carol's BYE
    ...
    await expect_replacement(interop, watcher, conference, baresip, since,
                             epoch=2, tones=(ALICE_TONE, LINPHONE_TONE))

What it needs from the product: the watcher Originates
``PJSIP/kamailio-out/<phone contact>`` into the bridge (the contact the phone
registered or sent in its first INVITE: :attr:`secconf.phones.Phone.contact`),
the INVITE passes Kamailio, which keys the offer with the conference's current
epoch and opens an edge leg for it; the phone auto-answers (both fixtures do).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from secconf.asterisk.watcher import Watcher
from secconf.phones import Phone
from tests.interop.audio import assert_hears
from tests.interop.conftest import PREFIX, InteropStack


async def expect_replacement(
    stack: InteropStack,
    watcher: Watcher,
    conference: str,
    phone: Phone,
    since: int,
    *,
    epoch: int,
    tones: tuple[float, ...],
    timeout: float = 15.0,
) -> dict[str, Any]:
    """The phone is back in the bridge on *epoch* and hears *tones*; returns its edge leg.

    1. an incoming call after *since*, auto-answered (the phone's own output);
    2. a bridge member for the phone again, with a new channel and SIP Call-ID;
    3. that dialog's record is on *epoch*, and so is its edge leg, which opens
       the phone's SRTP (``rtp_in`` grows, no ``auth_failures``);
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
            if member["caller_id"] == phone.user or phone.user in member["caller_id"]:
                call_id = member["call_id"]
        if call_id is None:
            assert time.monotonic() < deadline, f"{phone} is not back in the bridge"
            await asyncio.sleep(0.1)
    store = stack.store()
    try:
        dialog = store.dialog(call_id)
    finally:
        store.client.close()
    assert dialog is not None, call_id
    assert dialog.epoch == epoch, dialog
    legs = {leg["leg"]: leg for leg in stack.conference(conference)["legs"]}
    leg = legs[dialog.leg]
    assert leg["epoch"] == epoch, leg
    mark, before = phone.mark(), leg["counters"]["rtp_in"]
    await asyncio.sleep(2.0)
    after = {x["leg"]: x for x in stack.conference(conference)["legs"]}[dialog.leg]["counters"]
    assert after["rtp_in"] - before >= 80, after
    assert after["auth_failures"] == 0, after
    rate, samples = phone.heard(mark)
    assert_hears(samples, tones, f"{phone} after its replacement call", rate)
    return leg
