"""``python -m dataset_tools`` runs the CLI."""

import sys

from .cli import main

sys.exit(main())
