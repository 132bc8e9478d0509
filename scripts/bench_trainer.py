"""Benchmark: what ``physode.train.Trainer`` costs per epoch over a training loop written by hand.

Trains the same model on the same windows, in the same batches and order, with the same solves,
Adam steps, seed and float64, twice: (a) by ``Trainer.fit`` and (b) by a bare loop
(``physode.odeint``, a mean squared error, ``torch.optim.Adam``), for the gradient modes ACA and
Disc-Opt. Prints the time per epoch of each, their ratio, the final losses of both and the
largest difference of their weights (rounding: the Trainer solves a batch of windows that start
at different times on its first window's times, the bare loop on the grid's first times). The
models: the end-to-end demo's hybrid (three-body gravity with unknown masses plus a neural
residual, ``scripts/demo.py``, here with Adam on windows), a plain neural ODE on the harmonic
oscillator, and, where the Trainer's own work weighs most, a physics model with one learned
parameter in small batches and in one batch an epoch (run for 20 times as many epochs).

Usage: ``python scripts/bench_trainer.py [--epochs 6] [--repeats 3] [--threads 1] [--seed 0]
[--out DIR] [--quick]`` (the defaults; ``--quick``: 2 epochs, 1 repeat). Each time is the median
over the repeats, the Trainer's run and the bare loop's taken in turns; the Trainer's run is its
``fit()`` alone (the trainer is built before the clock starts, as the bare loop's windows are).
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

if __name__ == "__main__":  # not when a test imports the script
    _common.quiet_interrupts_from_the_start()  # Ctrl-C while importing: one line too

import torch  # noqa: E402

import physode  # noqa: E402
import physode.systems  # noqa: E402
from physode.models import Hybrid, NeuralODE, PhysicsModel  # noqa: E402
from physode.train import Trainer  # noqa: E402

GRADIENTS = ("aca", "disc-opt")


@dataclass
class Problem:
    """One model and its data: what both loops train."""

    name: str
    model: torch.nn.Module  # the initial weights; each run trains a copy
    t: torch.Tensor  # (P,)
    states: torch.Tensor  # (N, P, n)
    window: int
    stride: int
    batch_size: int
    observe: list[int] | None
    lr: float
    epoch_factor: int = 1  # runs this many times --epochs: its epochs are short


def trajectories(system_name: str, n: int, t_end: float, points: int, seed: int):
    """``n`` trajectories of a catalogue system from its initial-state distribution, solved
    tightly with the system's default parameters: (t, states of shape (n, points, n_state))."""
    system = physode.systems.load(system_name)
    y0 = system.sample_initial_states(n, seed=seed)
    p = system.default_parameters().to(torch.float64)
    t = torch.linspace(0, t_end, points, dtype=torch.float64)
    with torch.no_grad():
        ys = physode.odeint(lambda s, y: system.rhs(s, y, p), y0, t, rtol=1e-10, atol=1e-12)
    return t, ys.transpose(0, 1).contiguous()


def problems(seed: int, quick: bool) -> list[Problem]:
    out = []
    # The demo's hybrid: gravity with unknown masses (started 10 % off) plus a neural residual
    # that starts at zero, fitted to the positions (the first 9 components) of 8 trajectories.
    system = physode.systems.load("three_body_aca")
    t, states = trajectories("three_body_aca", 8, 0.25, 51, seed)
    torch.manual_seed(seed)
    init = {"m1": 1.0, "m2": 1.2, "m3": 0.85}
    hybrid = Hybrid(PhysicsModel(system, ["m1", "m2", "m3"], init=init),
                    NeuralODE(18, width=32, depth=2, zero_output=True)).double()  # fmt: skip
    out.append(Problem("demo hybrid (three-body)", hybrid, t, states, window=11, stride=5,
                       batch_size=16, observe=list(range(9)), lr=1e-3))  # fmt: skip
    t, states = trajectories("harmonic_oscillator", 16, 10.0, 101, seed)
    torch.manual_seed(seed)
    node = NeuralODE(2, width=32, depth=2).double()
    out.append(Problem("neural ODE (oscillator)", node, t, states, window=11, stride=5,
                       batch_size=32, observe=None, lr=1e-2))  # fmt: skip
    # Overhead-bound: a physics model with one learned parameter, short windows and small
    # batches, so each solve is cheap and the work around it shows.
    torch.manual_seed(seed)
    physics = PhysicsModel("harmonic_oscillator", ["k"], init={"k": 0.7}).double()
    out.append(Problem("physics model, small batches", physics, t, states, window=5, stride=5,
                       batch_size=8, observe=None, lr=1e-2))  # fmt: skip
    # Overhead-bound per epoch: the same model on the first second of each trajectory, whole,
    # all in one batch, so an epoch is one short solve and one step.
    out.append(Problem("physics model, one batch an epoch", physics, t[:11],
                       states[:, :11].contiguous(), window=11, stride=1, batch_size=16,
                       observe=None, lr=1e-2, epoch_factor=20))  # fmt: skip
    return out


def settings(problem: Problem, gradient: str, epochs: int, seed: int) -> dict[str, Any]:
    return dict(
        epochs=epochs, window=problem.window, window_stride=problem.stride,
        batch_size=problem.batch_size, observe=problem.observe, lr=problem.lr,
        gradient=gradient, method="dopri5", rtol=1e-6, atol=1e-8, seed=seed,
    )  # fmt: skip


def run_trainer(problem: Problem, gradient: str, epochs: int, seed: int):
    """(seconds of fit(), the last epoch's mean batch loss, the trained model)."""
    model = copy.deepcopy(problem.model)
    trainer = Trainer(model, (problem.t, problem.states),
                      **settings(problem, gradient, epochs, seed))  # fmt: skip
    start = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - start
    return seconds, result.final_loss, trainer.model


def run_bare(problem: Problem, gradient: str, epochs: int, seed: int):
    """The loop a user would write: the windows as index tensors once, then per epoch a
    shuffle, and per batch a gather, one solve, the loss, backward and an Adam step.

    It draws the same permutation from the same generator as the Trainer (which solves windows
    of different starts together for an autonomous model on a uniform grid), so both see the
    same batches in the same order."""
    model = copy.deepcopy(problem.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=problem.lr)
    generator = torch.Generator().manual_seed(seed)
    n, points, _ = problem.states.shape
    starts = list(range(0, points - problem.window + 1, problem.stride))
    if starts[-1] != points - problem.window:
        starts.append(points - problem.window)
    index = torch.tensor([i for i in range(n) for _ in starts])
    first = torch.tensor([s for _ in range(n) for s in starts])
    steps = torch.arange(problem.window)
    t = problem.t[: problem.window]
    observe = problem.observe
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(index), generator=generator)
        loss_sum = torch.zeros((), dtype=torch.float64)
        n_batches = 0
        for b in range(0, len(order), problem.batch_size):
            rows = order[b : b + problem.batch_size]
            target = problem.states[index[rows, None], first[rows, None] + steps].transpose(0, 1)
            ys = physode.odeint(model, target[0], t, method="dopri5", rtol=1e-6, atol=1e-8,
                                gradient=gradient)  # fmt: skip
            pred, ref = ys[1:], target[1:]
            if observe is not None:
                pred, ref = pred[..., observe], ref[..., observe]
            loss = (pred - ref).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum = loss_sum + loss.detach()
            n_batches += 1
    seconds = time.perf_counter() - start
    return seconds, loss_sum.item() / n_batches, model


def largest_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """The largest absolute difference between the two models' weights."""
    return max((x - y).abs().max().item() for x, y in zip(a.parameters(), b.parameters()))


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(_common.summary(__doc__), None, quick="2 epochs and 1 repeat",
                            seed="the initial states and the weights")  # fmt: skip
    parser.add_argument("--epochs", type=_common.positive_int, metavar="E",
                        help="epochs per run (default 6, 2 with --quick)")  # fmt: skip
    parser.add_argument("--repeats", type=_common.positive_int, metavar="R",
                        help="runs of each loop, taken in turns (default 3, 1 with --quick)")
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (2 if args.quick else 6)
    args.repeats = args.repeats or (1 if args.quick else 3)
    _common.setup(args)
    rows = []
    for problem in problems(args.seed, args.quick):
        for gradient in GRADIENTS:
            times: dict[str, list[float]] = {"trainer": [], "bare": []}
            runs: dict[str, Any] = {}
            epochs = args.epochs * problem.epoch_factor
            for r in range(args.repeats):
                # Alternate which loop goes first, so that neither always runs warm.
                order = ("trainer", "bare") if r % 2 == 0 else ("bare", "trainer")
                for which in order:
                    run = run_trainer if which == "trainer" else run_bare
                    seconds, loss, model = run(problem, gradient, epochs, args.seed)
                    times[which].append(seconds / epochs)
                    runs[which] = (loss, model)
            trainer_s, bare_s = (statistics.median(times[k]) for k in ("trainer", "bare"))
            rows.append({
                "model": problem.name, "gradient": gradient, "epochs": epochs,
                "trainer_ms_per_epoch": trainer_s * 1e3, "bare_ms_per_epoch": bare_s * 1e3,
                "ratio": trainer_s / bare_s,
                "trainer_final_loss": runs["trainer"][0], "bare_final_loss": runs["bare"][0],
                "max_weight_difference": largest_difference(runs["trainer"][1],
                                                            runs["bare"][1]),
            })  # fmt: skip
    print(f"Trainer.fit against a bare loop: median of {args.repeats} runs each, float64, "
          f"{torch.get_num_threads()} torch thread(s)")
    columns = ["model", "gradient", "epochs", "trainer_ms_per_epoch", "bare_ms_per_epoch", "ratio",
               "trainer_final_loss", "bare_final_loss", "max_weight_difference"]  # fmt: skip
    print(_common.table(rows, columns))
    results = {"epochs": args.epochs, "repeats": args.repeats, "seed": args.seed,
               "threads": torch.get_num_threads(), "rows": rows}  # fmt: skip
    _common.finish(args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(_common.interruptible(main))
