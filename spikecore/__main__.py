"""``python -m spikecore train ...``: the same as the ``spikecore`` console script."""
import sys

from .cli import main

sys.exit(main())
