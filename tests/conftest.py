import os

from hypothesis import HealthCheck, settings

# Derandomized by default: a property test must not pass or fail at random (CI runs this).
# HYPOTHESIS_PROFILE=explore draws new examples on every run, to hunt for failures locally.
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=30, derandomize=True, **_COMMON)
settings.register_profile("dev", max_examples=15, derandomize=True, **_COMMON)
settings.register_profile("explore", max_examples=200, derandomize=False, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
