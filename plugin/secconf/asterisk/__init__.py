"""Asterisk ConfBridge integration: AMI client, roster watcher, shipped config (docs/asterisk.md).

``ami`` is the AMI connection (panoramisk, timeouts, reconnect with backoff,
action helpers, the re-INVITE trigger), ``roster`` follows Confbridge events
into the pure :mod:`secconf.core.roster` tracker, ``config`` renders
config/asterisk/ and dialplan/ with real ports and credentials, ``watcher`` is
``secconf watcher serve``: Redis roster, lease and the rekey driver.
"""
