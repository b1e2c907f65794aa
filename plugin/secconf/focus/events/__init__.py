"""The conference event package at the focus (RFC 6665, RFC 4575): SUBSCRIBE and the NOTIFY timer.

:mod:`.subscriptions` takes SUBSCRIBE requests in Kamailio's workers; :mod:`.notifier` is
the node's timer that decides and builds every NOTIFY (docs/event-package.md).
"""
