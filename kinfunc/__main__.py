"""``python -m kinfunc`` = the ``kinfunc`` command."""
import sys

from .cli import main

sys.exit(main())
