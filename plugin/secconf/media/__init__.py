"""The secconf SRTP media edge: group-key epochs towards participants, a relay to ConfBridge.

``relay`` (conferences and legs), ``leg`` (one call's RTP packet path, the hot
path), ``leg_rtcp`` and ``leg_keys`` (its RTCP, its keys and sessions),
``sockets`` and ``counters``; ``service`` (validate, persist, apply), ``api``
(Starlette control API), ``views`` and ``metrics`` (what the API shows),
``state`` (Redis records, keys wrapped), ``config`` and ``server`` (``secconf
edge serve``).  The decisions live in the sans-IO :mod:`secconf.core.edge`.
See docs/edge.md.
"""
