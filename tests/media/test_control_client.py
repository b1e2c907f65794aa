"""The edge's API clients against the real edge: the blocking one (the focus's) and the
asyncio one (the watcher's) send the same token and map every failure the same way."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from secconf.core.errors import ServiceUnavailable
from secconf.core.keys import GroupKey
from secconf.core.sdes import SUITES
from secconf.media.control_client import AsyncHttpEdgeControl, HttpEdgeControl
from tests.media.edge_harness import TOKEN, EdgeUnderTest


def run(coro: Coroutine[Any, Any, None], timeout: float = 30.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def group_key(epoch: int) -> GroupKey:
    return GroupKey.generate(epoch, SUITES["AES_CM_128_HMAC_SHA1_80"], os.urandom)


async def both(
    url: str, token: str | None, blocking: Callable[[HttpEdgeControl], Any]
) -> tuple[Any, AsyncHttpEdgeControl]:
    """*blocking* on the focus's client (in a thread: the edge runs on this loop), and the
    watcher's client for the same edge and token."""
    sync = HttpEdgeControl(url, timeout=2.0, token=token)
    try:
        result = await asyncio.to_thread(blocking, sync)
    finally:
        sync.close()
    return result, AsyncHttpEdgeControl(url, timeout=2.0, token=token)


def test_the_watcher_reads_what_the_focus_put() -> None:
    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        try:
            _, client = await both(edge.url, TOKEN, lambda c: c.put_epoch("c1", group_key(3)))
            try:
                described = await client.describe_conference("c1")
                assert described is not None
                assert [e["epoch"] for e in described["epochs"]] == [3]
                assert described["legs"] == []
                assert await client.describe_conference("none") is None  # 404: not there
            finally:
                await client.aclose()
            deleted, _ = await both(edge.url, TOKEN, lambda c: c.delete_conference("none"))
            assert deleted is None  # a DELETE's 404 is no failure either
        finally:
            await edge.close()

    run(scenario())


def test_a_refusal_and_no_answer_are_service_unavailable_for_both() -> None:
    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        try:
            with pytest.raises(ServiceUnavailable, match=r"media edge refused PUT \(401\)"):
                await both(
                    edge.url, "wrong-token-" + "y" * 16, lambda c: c.put_epoch("c", group_key(1))
                )
            client = AsyncHttpEdgeControl(edge.url, timeout=2.0, token="wrong-token-" + "y" * 16)
            try:
                with pytest.raises(ServiceUnavailable, match=r"media edge refused GET \(401\)"):
                    await client.describe_conference("c")
            finally:
                await client.aclose()
        finally:
            await edge.close()

        with socket.socket() as unused:  # a port nobody listens on
            unused.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{unused.getsockname()[1]}"
        with pytest.raises(ServiceUnavailable, match=r"media edge unavailable \(\w+\)"):
            await both(url, None, lambda c: c.delete_conference("c"))
        client = AsyncHttpEdgeControl(url, timeout=2.0)
        try:
            with pytest.raises(ServiceUnavailable, match=r"media edge unavailable \(\w+\)"):
                await client.describe_conference("c")
        finally:
            await client.aclose()

    run(scenario())
