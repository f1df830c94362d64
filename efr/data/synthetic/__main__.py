"""``python -m efr.data.synthetic --out DIR --subjects N``: draw a synthetic RaFD-like photo set."""

import sys

from efr.data.synthetic.render import main

sys.exit(main())
