"""The sans-IO core: parsing, building, key schedules and conference policy.

Pure functions and small state machines only.  Nothing here opens a socket,
talks to Redis or Kamailio, reads the clock or draws random numbers: callers
pass those in (``tests/unit/test_core_is_sans_io.py`` keeps it that way).
"""
