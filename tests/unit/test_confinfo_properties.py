"""Hypothesis properties of RFC 4575 conference-info documents (secconf.core.confinfo).

- a full document reads back as the model it was written from;
- a chain of partial documents, applied per RFC 4575 §4.6, gives after every step
  the same state as a fresh full document of that step (random roster histories);
- every document written (full, partial, deleted) is valid per the RFC 4575 §6
  schema and ours, checked by xmlschema (tests/fixtures/confinfo.py);
- damaged documents raise only MalformedConferenceInfo;
- timestamps agree with the standard library's calendar (the core may not import it).

CI runs each with 2,000 examples (tests/conftest.py, profile "ci").
"""

from __future__ import annotations

import contextlib
import datetime
import itertools

from hypothesis import given
from hypothesis import strategies as st

from secconf.core.confinfo import (
    CONFERENCE_INFO_NS,
    ConferenceInfo,
    ConferenceView,
    DocumentState,
    Verdict,
    deleted_document,
    full_document,
    partial_document,
    read_document,
    receive,
)
from secconf.core.confinfo.timestamps import (
    MAX_SECONDS,
    MIN_SECONDS,
    format_datetime,
    parse_datetime,
)
from secconf.core.errors import MalformedConferenceInfo
from tests.fixtures.confinfo import assert_valid, histories, infos

versions = st.integers(0, 2**32 - 1)
NS = "{" + CONFERENCE_INFO_NS + "}"


@given(infos, versions)
def test_a_full_document_reads_back_as_its_model(info: ConferenceInfo, version: int) -> None:
    received = receive(None, full_document(info, version))
    assert received.verdict is Verdict.APPLIED
    assert received.view == ConferenceView(version, info)


def _assert_only_changes(previous: ConferenceInfo, current: ConferenceInfo, body: bytes) -> None:
    """A partial document names only users that changed (RFC 4575 §4.4: "only the information
    that has changed"); a full one (what a partial element cannot say) names them all."""
    document = read_document(body)
    users = document.root.find(NS + "users")
    if document.state is DocumentState.FULL or users is None:
        return
    for user in users.findall(NS + "user"):
        entity = user.get("entity", "")
        assert previous.user(entity) != current.user(entity), entity


@given(histories(), st.integers(0, 2**32 - 100))
def test_partial_chain_applied_equals_a_full_document_of_each_state(
    history: list[ConferenceInfo], first_version: int
) -> None:
    view = receive(None, full_document(history[0], first_version)).view
    assert view is not None
    for previous, current in itertools.pairwise(history):
        body = partial_document(previous, current, view.version + 1)
        if body is None:
            assert previous == current
            continue
        _assert_only_changes(previous, current, body)
        received = receive(view, body)
        assert received.verdict is Verdict.APPLIED
        assert received.view is not None
        fresh = receive(None, full_document(current, received.view.version)).view
        assert received.view == fresh
        assert received.view.info == current
        view = received.view


@given(histories(max_size=3), versions)
def test_every_document_written_is_schema_valid(
    history: list[ConferenceInfo], version: int
) -> None:
    assert_valid(full_document(history[0], version))
    for previous, current in itertools.pairwise(history):
        body = partial_document(previous, current, version)
        if body is not None:
            assert_valid(body)
    assert_valid(deleted_document(history[0].entity, version))


@given(infos, st.data())
def test_damaged_documents_raise_only_malformed_conference_info(
    info: ConferenceInfo, data: st.DataObject
) -> None:
    body = bytearray(full_document(info, 1))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(body) - 1))
        body[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    try:
        received = receive(None, bytes(body[:cut]))
    except MalformedConferenceInfo:
        return
    assert received.verdict in (Verdict.APPLIED, Verdict.RESYNC, Verdict.ENDED)


@given(st.binary(max_size=300))
def test_garbage_raises_only_malformed_conference_info(body: bytes) -> None:
    with contextlib.suppress(MalformedConferenceInfo):
        read_document(body)


@given(st.integers(MIN_SECONDS, MAX_SECONDS))
def test_timestamps_agree_with_the_standard_calendar(seconds: int) -> None:
    text = format_datetime(seconds)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    expected = epoch + datetime.timedelta(seconds=seconds)
    assert text == f"{expected.year:04d}-" + expected.strftime("%m-%dT%H:%M:%SZ")
    assert parse_datetime(text) == seconds
