"""``python -m liveos`` is the ``liveos`` command."""

import sys

from liveos.cli import main

sys.exit(main())
