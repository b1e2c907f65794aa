"""The secconf SRTP media edge: group-key epochs towards participants, a relay to ConfBridge.

``relay`` (asyncio + pylibsrtp packet path), ``service`` (validate, persist,
apply), ``api`` (Starlette control API and metrics), ``state`` (Redis records,
keys wrapped), ``config`` and ``server`` (``secconf edge serve``).  The
decisions live in the sans-IO :mod:`secconf.core.edge`.  See docs/edge.md.
"""
