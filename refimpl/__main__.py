"""python -m revlearn: the same as the `revlearn` command."""

import sys

from .cli import main

sys.exit(main())
