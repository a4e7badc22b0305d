"""Public module (the README's examples use it): re-exports ``experiments.model.lowrank``."""
from experiments.model.lowrank import *  # noqa: F401,F403
