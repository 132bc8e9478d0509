"""Defaults that several parts of physode share, kept in one place. The module imports nothing,
so that the torch-free ones (``physode.train.config``) can use it too."""

from __future__ import annotations

__all__ = ["MAX_STEPS"]

# The step attempts (accepted plus rejected) that one solve may take before it stops with
# Status.MAX_STEPS: physode.solve's default, and that of everything that solves with it
# (simulate, the trainer's settings, the rollout report, the `physode` commands).
MAX_STEPS = 100_000
