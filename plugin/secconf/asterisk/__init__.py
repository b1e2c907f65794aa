"""Asterisk ConfBridge integration: AMI client, roster watcher, shipped config (docs/asterisk.md).

``ami`` is the AMI connection (panoramisk, timeouts, reconnect with backoff,
action helpers, the re-INVITE trigger), ``roster`` follows Confbridge events
into the pure :mod:`secconf.core.roster` tracker, ``config`` renders
config/asterisk/ and dialplan/ with real ports and credentials, ``watcher`` is
``secconf watcher serve`` (its settings: ``watcher_settings``), wiring the
Redis roster (``roster_mirror``), the leases (``lease_keeper``), the rekey driver
(``rekey_driver``, with ``leg_switch`` and ``failed_legs``; ``channels`` and
``conference_view`` are what they read) and the dial-outs (``dialout``).
"""
