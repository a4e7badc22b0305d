"""Public module (the README's examples use it): re-exports ``experiments.model.moments``."""
from experiments.model.moments import *  # noqa: F401,F403
