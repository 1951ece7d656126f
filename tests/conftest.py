"""Hypothesis profiles for the whole suite.

`scripts/test --quick` selects `quick` (HYPOTHESIS_PROFILE=quick): fewer examples for the
properties that do not fix their own count, so the unit and deploy tests give feedback in
about a minute while working. Every other run uses `full`, Hypothesis's defaults without
the per-example deadline: a shared 2-core machine makes single examples slow at random.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("full", deadline=None)
settings.register_profile("quick", deadline=None, max_examples=20)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "full"))
