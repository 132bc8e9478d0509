"""Onken & Ruthotto's time-series problem: Disc-Opt (fixed RK4) against Opt-Disc (adaptive
adjoint) and ACA, by training time, final loss, extrapolation, and a Taylor test of each gradient.

The cubic spiral du/dt = (u³)ᵀA, A = [[-0.1, 2], [-2, -0.1]], u0 = (2, 0) (the catalogue's
``spiral``), 30 samples on [0, 1.5]; the model x³ → Linear(2, 50) → tanh → Linear(50, 2); Adam(0.1)
for 300 iterations on the whole series, from the same initial weights for every mode:

* ``disc-opt``: RK4 with a fixed step (one step per sample interval), Disc-Opt gradients;
* ``opt-disc``: dopri5 at rtol 1e-7 / atol 1e-9 with the continuous adjoint;
* ``aca``: dopri5 at the same tolerances with the adaptive checkpoint adjoint.

The Taylor test (docs/training.md, "How to choose a gradient mode") at a loose tolerance
(dopri5, rtol = atol = 1e-2; RK4 for Disc-Opt with its training step, which no step between two
samples can exceed) checks whether each gradient is the derivative of the loss the solver
computes: E1(h) = |J(θ+hd) - J(θ) - h ∇J·d| then falls like h².

    python scripts/spiral_disc_vs_opt.py --out out/spiral

Writes ``OUT/training.png``, ``OUT/extrapolation.png``, ``OUT/taylor.png``, a training log
``OUT/log_<mode>.csv`` per mode and, last, ``OUT/results.json`` (``runs`` keyed by mode with
``train_seconds``, ``final_loss``, ``extrapolation_mse``, ``taylor_E1_order``; ``taylor`` by
mode).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

if __name__ == "__main__":  # not when a test imports the script
    _common.quiet_interrupts_from_the_start()  # Ctrl-C while importing: one line too

import torch  # noqa: E402

import physode  # noqa: E402
import physode.systems  # noqa: E402
from physode.models import NeuralODE  # noqa: E402
from physode.train import Trainer, Trajectories, rollout_report  # noqa: E402

T_END, SAMPLES, T_EXTRAPOLATE = 1.5, 30, 6.0
MODES = {
    "disc-opt": {"method": "rk4", "step_size": T_END / (SAMPLES - 1), "gradient": "disc-opt"},
    "opt-disc": {"method": "dopri5", "rtol": 1e-7, "atol": 1e-9, "gradient": "opt-disc"},
    "aca": {"method": "dopri5", "rtol": 1e-7, "atol": 1e-9, "gradient": "aca"},
}
TAYLOR = {
    # The training step: a longer one (0.25) still takes one step per sample interval.
    "disc-opt": MODES["disc-opt"],
    "opt-disc": {"method": "dopri5", "rtol": 1e-2, "atol": 1e-2, "gradient": "opt-disc"},
    "aca": {"method": "dopri5", "rtol": 1e-2, "atol": 1e-2, "gradient": "aca"},
}


def cube(y: torch.Tensor) -> torch.Tensor:
    """The model's fixed input features u³."""
    return y**3


def make_model(seed: int) -> NeuralODE:
    """x³ → Linear(2, 50) → tanh → Linear(50, 2), in float64."""
    torch.manual_seed(seed)
    return NeuralODE(2, width=50, depth=1, activation="tanh", input_transform=cube).double()


def taylor_test(
    model: NeuralODE, data: Trajectories, solver: dict, seed: int, steps: int = 25
) -> dict:
    """E0(h) and E1(h) along a random direction, for h = 2^0 ... 2^-(steps - 1)."""
    y0, t, target = data.states[:, 0], data.t, data.states.transpose(0, 1)
    params = list(model.parameters())

    def loss() -> torch.Tensor:
        return (physode.odeint(model, y0, t, **solver)[1:] - target[1:]).pow(2).mean()

    j0 = loss()
    grads = torch.autograd.grad(j0, params)
    generator = torch.Generator().manual_seed(seed)
    direction = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params]
    slope = sum((g * d).sum() for g, d in zip(grads, direction, strict=True)).item()
    hs, e0, e1 = [], [], []
    with torch.no_grad():
        for k in range(steps):
            h = 2.0**-k
            for p, d in zip(params, direction, strict=True):
                p.add_(h * d)
            jh = loss().item()
            for p, d in zip(params, direction, strict=True):
                p.sub_(h * d)
            hs.append(h)
            e0.append(abs(jh - j0.item()))
            e1.append(abs(jh - j0.item() - h * slope))
    floor = 1e-12 * max(1.0, abs(j0.item()))  # below this, rounding in J dominates E1
    return {"h": hs, "E0": e0, "E1": e1, "J": j0.item(), "E1_order": fitted_order(hs, e1, floor)}


def fitted_order(hs: list[float], errors: list[float], floor: float) -> float:
    """Slope of log E against log h over the small steps (h <= 1/64) with E above ``floor``."""
    pairs = [(math.log(h), math.log(e)) for h, e in zip(hs, errors, strict=True)
             if h <= 2.0**-6 and e > floor]  # fmt: skip
    if len(pairs) < 2:
        return float("nan")
    mx = sum(x for x, _ in pairs) / len(pairs)
    my = sum(y for _, y in pairs) / len(pairs)
    return sum((x - mx) * (y - my) for x, y in pairs) / sum((x - mx) ** 2 for x, _ in pairs)


def main(argv: list[str] | None = None) -> int:
    args = _common.parser(_common.summary(__doc__), "out/spiral_disc_vs_opt").parse_args(argv)
    out = _common.setup(args)
    iterations = 5 if args.quick else 300
    system = physode.systems.load("spiral")
    t = torch.linspace(0, T_END, SAMPLES, dtype=torch.float64)
    y0 = system.initial_state("onken_ruthotto").to(torch.float64)
    ys = physode.odeint(system.vector_field(), y0, t, method="dop853", rtol=1e-12, atol=1e-12)
    data = Trajectories(t, ys[None], system=system)

    runs, histories, rollouts = {}, {}, {}
    for mode, solver in MODES.items():
        model = make_model(args.seed)
        trainer = Trainer(model, data, epochs=iterations, lr=0.1,
                          progress=False if args.quick else "auto",
                          log=str(out / f"log_{mode}.csv"), seed=args.seed, **solver)  # fmt: skip
        result = trainer.fit()
        extra = {k: v for k, v in solver.items() if k != "gradient"}
        report = rollout_report(model, data, horizon=T_END, t_end=T_EXTRAPOLATE,
                                conservation=False, **extra)  # fmt: skip
        histories[mode] = [row["loss"] for row in result.history]
        rollouts[mode] = report
        runs[mode] = {
            "train_seconds": result.train_seconds,
            "final_loss": result.final_loss,
            "extrapolation_mse": report.mse_beyond,
            "fit_mse": report.mse_within,
            "nfe_forward": sum(r["nfe_forward"] for r in result.history),
            "nfe_backward": sum(r["nfe_backward"] for r in result.history),
        }
    steps = 16 if args.quick else 25
    taylor = {mode: taylor_test(make_model(args.seed), data, solver, args.seed, steps)
              for mode, solver in TAYLOR.items()}  # fmt: skip
    for mode, test in taylor.items():
        runs[mode]["taylor_E1_order"] = test["E1_order"]

    time_ratio = runs["disc-opt"]["train_seconds"] / runs["opt-disc"]["train_seconds"]
    loss_ratio = runs["disc-opt"]["final_loss"] / runs["opt-disc"]["final_loss"]
    results = {"runs": runs, "taylor": taylor, "iterations": iterations,
               "disc_opt_over_opt_disc_time": time_ratio,
               "disc_opt_over_opt_disc_final_loss": loss_ratio, "quick": args.quick}  # fmt: skip
    rows = [{"mode": mode, **run} for mode, run in runs.items()]
    print(_common.table(rows, ["mode", "train_seconds", "final_loss", "extrapolation_mse",
                               "nfe_forward", "nfe_backward", "taylor_E1_order"]))  # fmt: skip
    print(f"Disc-Opt / Opt-Disc: time {time_ratio:.3f}, final loss {loss_ratio:.3f}")
    plot(out, histories, rollouts, taylor)
    print(f"wrote {_common.write_results(out, results)}")
    return 0


def plot(out: Path, histories: dict, rollouts: dict, taylor: dict) -> None:
    """Loss curves, extrapolated trajectories, and the Taylor test."""
    fig, axes = _common.figure()
    ax = axes[0][0]
    for mode, losses in histories.items():
        ax.semilogy(range(1, len(losses) + 1), losses, label=mode)
    ax.set(xlabel="iteration", ylabel="training loss (MSE)")
    ax.legend()
    _common.save_figure(fig, out / "training.png")

    fig, axes = _common.figure(1, 1, (5, 5))
    ax = axes[0][0]
    truth = next(iter(rollouts.values())).truth[0]
    ax.plot(truth[:, 0], truth[:, 1], "k", lw=2, label="truth [0, 6]")
    for mode, report in rollouts.items():
        ax.plot(report.predicted[0, :, 0], report.predicted[0, :, 1], "--", label=mode)
    ax.set(xlabel="u1", ylabel="u2", title="extrapolation to t = 6 (trained on [0, 1.5])")
    ax.legend()
    _common.save_figure(fig, out / "extrapolation.png")

    fig, axes = _common.figure(1, 1, (6, 4.5))
    ax = axes[0][0]
    for mode, test in taylor.items():
        (line,) = ax.loglog(test["h"], test["E1"], marker="o", label=f"E1 {mode}")
        ax.loglog(test["h"], test["E0"], ls=":", color=line.get_color(), label=f"E0 {mode}")
    h = torch.tensor(taylor["aca"]["h"])
    scale = taylor["aca"]["E1"][0]
    ax.loglog(h, scale * h**2, "k--", lw=0.8, label="h²")
    ax.set(xlabel="h", ylabel="Taylor error", title="Taylor test at tolerance 1e-2")
    ax.legend(fontsize=7)
    _common.save_figure(fig, out / "taylor.png")


if __name__ == "__main__":
    raise SystemExit(_common.interruptible(main))
