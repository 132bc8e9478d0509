"""One rule for cutting a grid of sample times at a time a user gives (``t_end``, ``horizon``,
``calibrate``, ``Trajectories.until``): which sample times count as ``t <= end``.

Sample times are stored rounded: ``torch.linspace(0, 2, 21, dtype=torch.float64)[3]`` is
0.30000000000000004 and float32's 0.1 is 0.10000000149011612. A user who gives 0.3 means the
sample at 0.3, so a sample time within rounding of ``end`` counts as equal to it.
"""

from __future__ import annotations

import torch

# Units in the last place (of the grid's dtype, at the largest time in play) that still count
# as rounding, as physode.train.data.uniform_grid tolerates them between spacings.
_ULPS = 8
# The slack is never more than this fraction of the smallest spacing: a time clearly between
# two samples still cuts at the lower one, and no two samples are ever taken as one.
_SPACING_FRACTION = 0.1


def time_slack(t: torch.Tensor, end: float) -> float:
    """How far past ``end`` a sample time of ``t`` may lie and still count as ``<= end``.

    A few units in the last place, in ``t``'s dtype, of the largest time in play
    (``max(|t[0]|, |t[-1]|, |end|)``), and at most a tenth of the smallest spacing of ``t``.

    >>> t = torch.linspace(0, 2, 21, dtype=torch.float64)
    >>> time_slack(t, 0.3) < 1e-14
    True
    """
    dtype = t.dtype if t.is_floating_point() else torch.float64
    times = t.detach()
    scale = abs(float(end))
    if len(times):
        scale = max(scale, abs(float(times[0])), abs(float(times[-1])))
    slack = _ULPS * torch.finfo(dtype).eps * scale
    if len(times) > 1:
        slack = min(slack, _SPACING_FRACTION * float((times[1:] - times[:-1]).min()))
    return max(slack, 0.0)


def times_up_to(t: torch.Tensor, end: float) -> torch.Tensor:
    """Which sample times of ``t`` (increasing) count as ``<= end``: a boolean mask on ``t``'s
    device. A time within rounding of ``end`` (:func:`time_slack`) counts as equal to it.

    Compared in float64, so that the cut does not depend on how ``end`` rounds to ``t``'s dtype.

    Examples
    --------
    ``linspace``'s fourth time is 0.30000000000000004; ``end=0.3`` takes it, ``end=0.35`` (clearly
    between two samples) cuts at the lower one:

    >>> t = torch.linspace(0, 2, 21, dtype=torch.float64)
    >>> int(times_up_to(t, 0.3).sum()), int(times_up_to(t, 0.35).sum())
    (4, 4)
    >>> int(times_up_to(t.float(), 0.1).sum())  # float32's 0.1 is 0.10000000149011612
    2
    """
    end = float(end)
    keep = t.detach().to("cpu", torch.float64) <= end + time_slack(t, end)
    return keep.to(t.device)


def count_up_to(t: torch.Tensor, end: float) -> int:
    """How many sample times of ``t`` count as ``<= end`` (:func:`times_up_to`)."""
    return int(times_up_to(t, end).sum())
