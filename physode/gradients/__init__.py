"""The three gradient modes, each a small object sharing the one solver loop."""

from physode.gradients.aca import ACA
from physode.gradients.base import GradientMode, Problem
from physode.gradients.discopt import DiscOpt
from physode.gradients.optdisc import OptDisc

__all__ = ["ACA", "DiscOpt", "GradientMode", "OptDisc", "Problem"]

GRADIENT_NAMES = {"disc-opt": DiscOpt, "opt-disc": OptDisc, "aca": ACA}
