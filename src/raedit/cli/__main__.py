"""`python -m raedit.cli` (and `torchrun -m raedit.cli ...`) runs the `raedit` command."""

import sys

from raedit.cli import main

sys.exit(main())
