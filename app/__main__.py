"""``python -m app …`` is the ``payrouter`` command (app.entrypoints.cli)."""
import sys

from app.entrypoints.cli import main

sys.exit(main())
