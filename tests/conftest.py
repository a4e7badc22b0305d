"""Hypothesis profiles: ``default`` (a few hundred examples over the theory properties, deterministic) and
``thorough`` (GBD_HYPOTHESIS_PROFILE=thorough, ten times more, random)."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("GBD_HYPOTHESIS_PROFILE", "default"))
