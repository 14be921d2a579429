"""``python -m trio_tlsattach`` runs the ``tlsattach`` command."""

import sys

from ._cli import main

sys.exit(main())
