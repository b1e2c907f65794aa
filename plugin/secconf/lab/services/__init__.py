"""Starting the helper services secconf's demo and benchmarks need, on free loopback ports.

Production runs Redis and the KMS under the operator's service manager; these
launchers exist so that ``make demo``, the tests and ``bench/`` run the real programs
without touching ports other software may hold.  One module per program:

- :mod:`.process`: what every launcher shares (the checkout's files, free ports, starting
  and stopping a child, :class:`~.process.ServiceError`);
- :mod:`.redis_server`: a throw-away ``redis-server``;
- :mod:`.kms`: ``secconf kms serve`` and its users;
- :mod:`.edge`: ``secconf edge serve``;
- :mod:`.kamailio`: Kamailio with the shipped cfg and the secconf module;
- :mod:`.asterisk`: Asterisk from the cached Debian tree, chrooted.
"""
