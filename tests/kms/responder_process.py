"""A Responder built only from secconf's public API, run as its own process.

stdin: the TRANSFER_INIT as hex.  argv: KMS URL, KMS identity, own identity,
PSK file.  stdout: one JSON object: the TRANSFER_RESP as hex, the
authenticated initiator, and SHA-256 fingerprints of the SRTP keys per CS.
A refusal prints {"refused": <MIKEY error no>, "message": ...} and exits 3.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import sys
import time

from secconf.core.errors import MikeyError
from secconf.core.mikey import GenericIdEntry, SrtpSessionData
from secconf.core.mikey.ticket import TransferInit, build_transfer_resp
from secconf.kms.async_client import KmsClient
from secconf.store import load_key_file


async def main() -> int:
    kms_url, kms_identity, identity, psk_file = sys.argv[1:5]
    client = KmsClient(kms_url, kms_identity, identity, load_key_file(psk_file, "PSK"))
    data = bytes.fromhex(sys.stdin.read().strip())
    try:
        transfer = TransferInit.read(data)
        transfer.early_check(identity, now=time.time())
        resolved = await client.resolve(transfer)
    except MikeyError as exc:
        print(json.dumps({"refused": exc.error_no, "message": exc.message}))
        return 3
    sessions = [*transfer.sessions, GenericIdEntry.for_srtp(2, [0], SrtpSessionData(0x2222, 0, 0))]
    answer, keys = build_transfer_resp(
        transfer,
        resolved,
        responder=identity,
        sessions=sessions,
        now=time.time(),
        random_bytes=secrets.token_bytes,
    )
    fingerprints = {
        str(cs): hashlib.sha256(key.key + key.salt).hexdigest() for cs, key in keys.items()
    }
    print(
        json.dumps(
            {"transfer_resp": answer.hex(), "initiator": transfer.initiator, "keys": fingerprints}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
