"""``python -m experiments`` runs the ``gbd-audit`` command line."""
import sys

from experiments.cli import main

sys.exit(main())
