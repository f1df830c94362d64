"""`python -m efr ...` is the `efr` command."""

import sys

from efr.commands import main

sys.exit(main())
