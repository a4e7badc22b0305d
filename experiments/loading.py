"""Public module (the README's examples use it): re-exports ``experiments.model.loading``."""
from experiments.model.loading import *  # noqa: F401,F403
