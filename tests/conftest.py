"""Test-session settings shared by every test module."""

from __future__ import annotations

import os
import tempfile

# Derived systems are cached on disk (physode.symbolic._cache); the suite keeps its own cache,
# shared with the subprocesses it starts, instead of writing into the user's.
os.environ["PHYSODE_CACHE_DIR"] = tempfile.mkdtemp(prefix="physode-test-cache-")
