"""Test-session settings shared by every test module."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Derived systems are cached on disk (physode.symbolic._cache); the suite keeps its own cache,
# shared with the subprocesses it starts, instead of writing into the user's, and removes it at
# the end.
_CACHE = tempfile.mkdtemp(prefix="physode-test-cache-")
os.environ["PHYSODE_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
