"""``python -m quickdraw_mobile.cli``: the ``qdm`` command (torchrun launches training this way)."""

import sys

from . import main

sys.exit(main())
