"""The KSR adapter and the handler's guard, with a fake KSR (no Kamailio)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from secconf.core.errors import Forbidden
from secconf.core.focus import OfferedStream
from secconf.focus.messages import Relay, Reply
from secconf.focus.service import FocusService
from secconf.focus.settings import SettingsError, load_settings
from secconf.focus.state import TransactionState
from secconf.kamailio.adapter import AVP, KsrAdapter
from secconf.kamailio.handler import SecconfKemi
from secconf.media.control_client import LegAddresses

from .conftest import settings_text
from .fake_ksr import FakeKsr

REQUEST_PVS = {
    "$rm": "INVITE",
    "$ru": "sip:conf-factory@127.0.0.1",
    "$rU": "conf-factory",
    "$ci": "abc@host",
    "$si": "127.0.0.1",
    "$fu": "sip:alice@example.com",
    "$ft": "t1",
    "$tt": None,
    "$cT": "application/sdp",
    "$rb": "v=0\r\n",
    "$cl": "5",
    "$hdr(P-Asserted-Identity)": "<sip:alice@example.com>",
}


def test_request_view_reads_plain_values() -> None:
    ksr = FakeKsr(pvs=dict(REQUEST_PVS))
    view = KsrAdapter(ksr).request(["P-Asserted-Identity"])
    assert (view.method, view.ruri_user, view.call_id, view.source_ip) == (
        "INVITE", "conf-factory", "abc@host", "127.0.0.1",
    )  # fmt: skip
    assert view.body == b"v=0\r\n"
    assert view.content_length == 5
    assert not view.in_dialog
    assert view.headers == {"P-Asserted-Identity": "<sip:alice@example.com>"}
    assert "v=0" not in repr(view)


def test_missing_values_are_none_or_empty() -> None:
    view = KsrAdapter(FakeKsr()).request(["X"])
    assert view.body == b""
    assert view.content_length == 0
    assert view.headers == {"X": None}


def test_reply_appends_headers_then_answers() -> None:
    ksr = FakeKsr()
    KsrAdapter(ksr).reply(Reply(403, "Forbidden", (("Warning", '399 f "no"'),)))
    assert ksr.calls == [
        ("hdr.append_to_reply", ('Warning: 399 f "no"\r\n',)),
        ("sl.send_reply", (403, "Forbidden")),
    ]


def test_relay_sets_everything_before_t_relay() -> None:
    ksr = FakeKsr()
    ok = KsrAdapter(ksr).relay(
        Relay("sip:conf-1@127.0.0.1:5080", b"v=0\r\n", state="{}", on_reply="r", on_failure="f")
    )
    assert ok
    assert ksr.names() == [
        "rr.record_route", "pv.sets", "textops.set_body", "pv.sets", "tm.t_on_reply",
        "tm.t_on_failure", "tm.t_relay",
    ]  # fmt: skip
    assert ksr.pvs["$ru"] == "sip:conf-1@127.0.0.1:5080"
    assert ksr.pvs[AVP] == "{}"


def test_relay_failure_answers_an_error() -> None:
    ksr = FakeKsr(relay_result=-1)
    assert not KsrAdapter(ksr).relay(Relay())
    assert ksr.names()[-1] == "sl.sl_reply_error"


def test_transaction_state_round_trips_without_keys() -> None:
    state = TransactionState(
        "c0ffee", "leg", (OfferedStream(0, "RTP/SAVP", 2),), LegAddresses("127.0.0.2", (5000,)),
        "sip:conf-c0ffee@x", True, (("audio", "RTP/SAVP", "0"),),
    )  # fmt: skip
    assert TransactionState.from_json(state.to_json()) == state


@pytest.fixture
def kemi(tmp_path: Path) -> tuple[SecconfKemi, FakeKsr]:
    from secconf.store import generate_key_file

    kek = tmp_path / "kek"
    generate_key_file(kek)
    generate_key_file(tmp_path / "mixer-token")
    config = tmp_path / "s.toml"
    config.write_text(settings_text(kek))
    settings = load_settings(
        config,
        env={
            "SECCONF_REDIS_URL": "redis://127.0.0.1:1/0",
            "SECCONF_MIXER_TOKEN_FILE": str(tmp_path / "mixer-token"),
        },
    )
    ksr = FakeKsr(pvs=dict(REQUEST_PVS))
    handler = SecconfKemi(ksr, settings, bytes(32))
    assert handler.child_init(1) == 0
    return handler, ksr


def test_guard_answers_500_on_an_unexpected_exception(
    kemi: tuple[SecconfKemi, FakeKsr], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, ksr = kemi

    def boom(self: Any, request: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(FocusService, "on_request", boom)
    assert handler.ksr_request_route(None) == 1
    assert ("sl.send_reply", (500, "Server Internal Error")) in ksr.calls
    errors = [args[0] for name, args in ksr.calls if name == "err"]
    assert len(errors) == 1
    assert "RuntimeError: boom" in errors[0]
    assert "\n" not in errors[0][:-1]


@pytest.mark.parametrize("authenticated", [False, True])
def test_refusal_tells_only_an_authenticated_sender_why(
    kemi: tuple[SecconfKemi, FakeKsr], monkeypatch: pytest.MonkeyPatch, authenticated: bool
) -> None:
    handler, ksr = kemi

    def refuse(self: Any, request: Any) -> Any:
        error = Forbidden('not "allowed"')
        error.detailed = authenticated
        raise error

    monkeypatch.setattr(FocusService, "on_request", refuse)
    handler.ksr_request_route(None)
    warning = ("hdr.append_to_reply", ('Warning: 399 focus.test "not \\"allowed\\""\r\n',))
    assert (warning in ksr.calls) is authenticated
    assert not any(name == "hdr.append_to_reply" for name, _ in ksr.calls) or authenticated
    assert ("info", ('secconf: INVITE refused 403: not "allowed"\n',)) in ksr.calls  # logged
    assert ksr.calls[-1] == ("sl.send_reply", (403, "Forbidden"))


def test_redis_down_in_the_request_route_is_503(kemi: tuple[SecconfKemi, FakeKsr]) -> None:
    handler, ksr = kemi
    ksr.pvs["$rb"] = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" \
        "m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 " \
        "inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd\r\n"  # fmt: skip
    ksr.pvs["$cl"] = str(len(ksr.pvs["$rb"]))
    handler.ksr_request_route(None)
    assert ksr.calls[-1] == ("sl.send_reply", (503, "Service Unavailable"))


def test_reply_and_onsend_routes_exist() -> None:
    for name in ("ksr_request_route", "ksr_reply_route", "ksr_onsend_route",
                 "ksr_onreply_secconf", "ksr_failure_secconf", "child_init"):  # fmt: skip
        assert callable(getattr(SecconfKemi, name))


def test_settings_errors_name_the_key(tmp_path: Path) -> None:
    config = tmp_path / "s.toml"
    config.write_text('[focus]\nconference_pattern = "conf-(.*)"\n')
    with pytest.raises(SettingsError, match="group named 'id'"):
        load_settings(config, env={})
    with pytest.raises(SettingsError, match="SECCONF_KAMAILIO_CONFIG"):
        load_settings(None, env={})


def test_relay_puts_the_conference_into_the_record_route() -> None:
    ksr = FakeKsr()
    relay = Relay("sip:conf-1@127.0.0.1:5080", conference_id="c0ffee01", route_mac="ab" * 16)
    assert KsrAdapter(ksr).relay(relay)
    assert ksr.names()[:2] == ["rr.add_rr_param", "rr.record_route"]
    assert ksr.calls[0] == ("rr.add_rr_param", (f";sc-conf=c0ffee01;sc-mac={'ab' * 16}",))
    # Not record-routed: no parameter either.
    ksr = FakeKsr()
    KsrAdapter(ksr).relay(Relay(record_route=False, conference_id="c0ffee01"))
    assert "rr.add_rr_param" not in ksr.names()


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("sip:127.0.0.1:5060;lr;ftag=a1;sc-conf=c0ffee01", ("c0ffee01", None)),
        ("sip:127.0.0.1:5060;sc-conf=ABC;lr", ("abc", None)),
        ("sip:focus.example.com;lr;sc-conf=c0ffee01>", ("c0ffee01", None)),
        ("sip:f;lr;sc-conf=c0ffee01;sc-mac=ABCDEF01>", ("c0ffee01", "abcdef01")),
        ("sip:f;lr;sc-mac=0f;sc-conf=c0ffee01", ("c0ffee01", "0f")),
        ("sip:f;lr;sc-conf=c0ffee01;sc-mac=zz", ("c0ffee01", None)),
        ("sip:127.0.0.1:5060;lr;ftag=a1", (None, None)),
        ("sip:127.0.0.1:5060;lr;xsc-conf=c0ffee01", (None, None)),
        ("sip:127.0.0.1:5060;lr;sc-conf=c0f-fee", (None, None)),
        ("sip:127.0.0.1:5060;lr;sc-conf=", (None, None)),
        (None, (None, None)),
    ],
)
def test_route_conference_reads_our_parameter(
    route: str | None, expected: tuple[str | None, str | None]
) -> None:
    ksr = FakeKsr(pvs={"$route_uri": route} if route is not None else {})
    assert KsrAdapter(ksr).route_conference() == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [("redis+cluster://h:1/3", "database 0 only"), ("redis+sentinel://s:1", "service-name")],
)
def test_settings_refuse_a_bad_redis_url(tmp_path: Path, url: str, message: str) -> None:
    config = tmp_path / "s.toml"
    config.write_text(
        '[focus]\ndomain = "d"\n[upstream]\nuri = "sip:127.0.0.1:9"\n'
        f'[redis]\nurl = "{url}"\nkek_file = "k"\n'
    )
    with pytest.raises(SettingsError, match=r"\[redis\] url: .*" + message):
        load_settings(config, env={})


def test_location_service_calls_go_through_the_adapter() -> None:
    """REGISTER/dial-out: registrar.save and lookup (after $ru = the target), $sp read."""

    ksr = FakeKsr(pvs={"$rm": "INVITE", "$sp": "5080", "$si": "127.0.0.1"})
    ksr.registrar = type(ksr.sl)("registrar", {"save": 1, "lookup": -1})  # type: ignore[attr-defined]
    adapter = KsrAdapter(ksr)
    assert adapter.request().source_port == 5080
    assert adapter.save_registration()
    assert adapter.lookup("sip:dave@example.com") == -1
    adapter.set_ruri("sip:dave@192.0.2.7:5060")
    assert ksr.calls[-4:] == [
        ("registrar.save", ("location", 0)),
        ("pv.sets", ("$ru", "sip:dave@example.com")),
        ("registrar.lookup", ("location",)),
        ("pv.sets", ("$ru", "sip:dave@192.0.2.7:5060")),
    ]
    ksr.pvs["$sp"] = "not-a-port"
    assert adapter.request().source_port == 0


def test_dialout_kms_users_need_kms_mode_and_choose_the_leg_mode(tmp_path: Path) -> None:
    """``[dialout] kms_users`` without ``[kms]`` stops the start; the leg's mode rule."""
    from dataclasses import replace

    from secconf.focus.dialout import dialout_mode
    from secconf.store import generate_key_file

    config = tmp_path / "s.toml"
    generate_key_file(tmp_path / "mixer-token")
    base = (
        '[focus]\ndomain = "d"\n[upstream]\nuri = "sip:127.0.0.1:9"\n'
        'token_secret_file = "mixer-token"\n[redis]\nkek_file = "k"\n'
    )
    config.write_text(base + '[dialout]\nkms_users = ["sip:dave@example.com"]\n')
    env = {"SECCONF_REDIS_URL": "redis://127.0.0.1:1/0"}
    with pytest.raises(SettingsError, match=r"\[dialout\] kms_users needs \[kms\]"):
        load_settings(config, env=env)
    config.write_text(base + '[dialout]\nkms_users = "sip:dave@example.com"\n')
    with pytest.raises(SettingsError, match="list of identities"):
        load_settings(config, env=env)
    config.write_text(base)
    settings = load_settings(config, env=env)
    dave, erin = "sip:dave@example.com", "sip:erin@example.com"
    # Without mixed modes the conference's mode decides.
    assert dialout_mode(settings, "kms", dave) == "kms"
    assert dialout_mode(settings, "sdes", dave) == "sdes"
    # With mixed modes the target does: KMS mode only for the listed KMS users.
    mixed = replace(settings, mixed_modes=True, dialout_kms_users=frozenset({dave}))
    assert dialout_mode(mixed, "sdes", dave) == "kms"
    assert dialout_mode(mixed, "kms", erin) == "sdes"


ACK_VIEW = "$_s($pr $si $sp $ft $tt $cl $ci)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp 127.0.0.1 5060 ft1 tt1 0 abc@host", ("abc@host", "udp:127.0.0.1:5060|ft1|tt1")),
        # The Call-ID is last: whatever it holds stays in it.
        ("tls 192.0.2.1 5061 a b 0 odd call id", ("odd call id", "tls:192.0.2.1:5061|a|b")),
        ("udp 127.0.0.1 5060 ft1 tt1 12 abc@host", None),  # a body: the whole gate
        ("udp 127.0.0.1 5060 ft1 tt1 <null> abc@host", None),  # no Content-Length
        ("udp 127.0.0.1 5060 ft1 <null> 0 abc@host", None),  # no To tag
        ("udp 127.0.0.1 x ft1 tt1 0 abc@host", None),
        ("udp 127.0.0.1 5060 ft1 tt1 0", None),  # too few fields
        (None, None),
    ],
)
def test_bodiless_ack_is_one_read(text: str | None, expected: tuple[str, str] | None) -> None:
    ksr = FakeKsr(pvs={ACK_VIEW: text})
    assert KsrAdapter(ksr).bodiless_ack() == expected


def test_dialog_request_is_one_read_and_measures_a_body_without_content_length() -> None:
    view = KsrAdapter(FakeKsr(pvs={ACK_VIEW: "udp 127.0.0.1 5060 ft1 tt1 0 abc@host"}))
    request = view.dialog_request()
    assert (request.call_id, request.from_tag, request.to_tag) == ("abc@host", "ft1", "tt1")
    assert (request.content_type, request.content_length) == (None, 0)
    assert str(request.flow) == "udp:127.0.0.1:5060"
    with_body = FakeKsr(
        pvs={ACK_VIEW: "udp 127.0.0.1 5060 ft1 tt1 5 abc@host", "$cT": "application/sdp"}
    )
    assert KsrAdapter(with_body).dialog_request().content_type == "application/sdp"
    # No Content-Length over UDP: the body is the rest of the datagram, measured.
    pvs = {
        ACK_VIEW: "udp 127.0.0.1 5060 ft1 tt1 <null> abc@host", "$ci": "abc@host",
        "$ft": "ft1", "$tt": "tt1", "$pr": "udp", "$si": "127.0.0.1", "$sp": "5060",
        "$cl": None, "$cT": "application/sdp", "$rb": "v=0\r\n",
    }  # fmt: skip
    request = KsrAdapter(FakeKsr(pvs=pvs)).dialog_request()
    assert (request.content_type, request.content_length) == ("application/sdp", 5)
