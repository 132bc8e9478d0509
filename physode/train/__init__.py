"""Training: fit models to trajectories through the solver layer, checkpoint, and evaluate.

>>> import torch
>>> from physode.models import NeuralODE
>>> from physode.train import Trainer
>>> t = torch.linspace(0, 1, 11, dtype=torch.float64)
>>> ys = torch.exp(-t)[:, None]
>>> result = Trainer(NeuralODE(1, width=4, depth=1), (t, ys), epochs=2, window=4).fit()
>>> [row["epoch"] for row in result.history]
[1, 2]
"""

from __future__ import annotations

from physode.train.config import GRADIENT_MODES, LR_SCHEDULES, TrainConfig
from physode.train.data import Trajectories, as_trajectories
from physode.train.evaluate import RolloutReport, ground_truth, rollout_report
from physode.train.trainer import Trainer, TrainResult, write_log

__all__ = [
    "GRADIENT_MODES",
    "LR_SCHEDULES",
    "RolloutReport",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "Trajectories",
    "as_trajectories",
    "ground_truth",
    "rollout_report",
    "write_log",
]
