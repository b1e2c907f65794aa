"""The conference focus: who may create, join, subscribe and REFER, and how each leg is keyed.

The conference's logic, shared by every adapter around it: the SIP server's (secconf.kamailio
turns KSR into :mod:`~secconf.focus.messages` values and carries out the decisions), the
watcher's (secconf.asterisk: rekeys through one :class:`~secconf.focus.epochs.EpochMinter`), and the capabilities
to come (the conference event package, floor control). It knows no SIP server and no mixer:
it speaks to Redis through secconf.store, to the media edge and the KMS through their clients.
"""
