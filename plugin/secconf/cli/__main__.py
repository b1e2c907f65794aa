"""``python -m secconf.cli``: the ``secconf`` command."""

import sys

from . import main

sys.exit(main())
