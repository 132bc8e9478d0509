"""APHYNITY's damped pendulum: frictionless pendulum physics plus a residual that must learn the
damping, against physics alone, a hybrid without the APHYNITY penalty, and a neural ODE.

Truth: the catalogue's ``damped_pendulum``, θ'' = -ω0² sin θ - α θ' with ω0 = 2π/6, α = 0.2,
sampled every Δt = 0.5 on [0, 20] from initial states of the system's own distribution. The
physics term is the catalogue's frictionless ``pendulum`` (θ'' = -(g/l) sin θ, l = 1) with g
learnable, so the recovered frequency is ω0 = sqrt(g / l). APHYNITY minimises ‖f_residual‖² +
λ·L_traj and raises λ ← λ + τ·L_traj after each batch, so the residual explains only the damping.

    python scripts/damped_pendulum.py --out out/damped_pendulum

Writes ``OUT/pendulum.png``, a training log ``OUT/log_<model>.csv`` per model and, last,
``OUT/results.json`` (``omega0_true``; ``runs`` keyed ``physics``, ``hybrid`` (APHYNITY),
``hybrid_no_aphynity``, ``neural``: ``test_mse`` and, where the model has them, ``omega0``,
``residual_norm``, ``damping_error``).
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
from physode.models import Aphynity, Hybrid, NeuralODE, PhysicsModel  # noqa: E402
from physode.train import Trainer, Trajectories, rollout_report  # noqa: E402

T_END, DT = 20.0, 0.5
SOLVER = {"method": "dopri5", "rtol": 1e-6, "atol": 1e-8}
G_START = 0.5  # a deliberately wrong start: ω0 = 0.71 instead of 1.05


def simulate(system, n: int, seed: int) -> Trajectories:
    """``n`` true trajectories on [0, 20], every 0.5."""
    t = torch.arange(0, T_END + DT / 2, DT, dtype=torch.float64)
    y0 = system.sample_initial_states(n, seed=seed).to(torch.float64)
    ys = physode.odeint(system.vector_field(), y0, t, method="dop853", rtol=1e-11, atol=1e-11)
    return Trajectories(t, ys.transpose(0, 1), system=system)


def residual(seed: int, width: int = 32) -> NeuralODE:
    torch.manual_seed(seed)
    return NeuralODE(2, width=width, depth=2, zero_output=True).double()


def main(argv: list[str] | None = None) -> int:
    args = _common.parser(_common.summary(__doc__), "out/damped_pendulum").parse_args(argv)
    out = _common.setup(args)
    truth_system = physode.systems.load("damped_pendulum")
    omega_true = truth_system.parameters["omega0"]
    alpha_true = truth_system.parameters["alpha"]
    pendulum = physode.systems.load("pendulum")
    length = pendulum.parameters["l"]
    train = simulate(truth_system, 4 if args.quick else 8, args.seed)
    test = simulate(truth_system, 2 if args.quick else 4, args.seed + 1000)
    # Each Adam step: one batch of 32 windows of 11 points (5 time units).
    common = dict(epochs=3 if args.quick else 300, window=11, batch_size=32,
                  batches_per_epoch=1, lr=1e-2, lr_schedule="cosine", grad_clip=1.0,
                  progress=False if args.quick else "auto", **SOLVER)  # fmt: skip

    models = {
        "physics": PhysicsModel(pendulum, ["g"], init={"g": G_START}),
        "hybrid": Hybrid(PhysicsModel(pendulum, ["g"], init={"g": G_START}), residual(args.seed),
                         Aphynity(lambda_init=0.1, tau=100.0)),  # fmt: skip
        "hybrid_no_aphynity": Hybrid(PhysicsModel(pendulum, ["g"], init={"g": G_START}),
                                     residual(args.seed)),  # fmt: skip
    }
    torch.manual_seed(args.seed)
    models["neural"] = NeuralODE(2, width=32, depth=2).double()

    runs: dict[str, dict] = {}
    reports = {}
    for name, model in models.items():
        if name == "physics":
            config = dict(epochs=2 if args.quick else 30, optimizer="lbfgs", lr=1.0,
                          batch_size=len(train), **SOLVER)  # fmt: skip
        else:
            config = common
        result = Trainer(model, train, log=str(out / f"log_{name}.csv"), seed=args.seed,
                         **config).fit()  # fmt: skip
        report = rollout_report(model, test, conservation=False, **SOLVER)
        reports[name] = report
        run = {"test_mse": report.mse, "train_seconds": result.train_seconds,
               "final_loss": result.final_loss}  # fmt: skip
        if "g" in result.physical_parameters:
            omega = math.sqrt(result.physical_parameters["g"] / length)
            run["omega0"] = omega
            run["omega0_rel_error"] = abs(omega - omega_true) / omega_true
        if isinstance(model, Hybrid):
            run.update(residual_scores(model, report, alpha_true))
            if model.aphynity is not None:
                run["aphynity_lambda"] = float(model.aphynity_lambda)
        runs[name] = run

    results = {"omega0_true": omega_true, "alpha_true": alpha_true, "omega0_start":
               math.sqrt(G_START / length), "runs": runs, "quick": args.quick}  # fmt: skip
    rows = [{"model": name, **run} for name, run in runs.items()]
    print(f"true ω0 = {omega_true:.6f}, α = {alpha_true}")
    print(_common.table(rows, ["model", "test_mse", "omega0", "omega0_rel_error",
                               "residual_norm", "damping_error", "train_seconds"]))  # fmt: skip
    plot(out, test, reports)
    print(f"wrote {_common.write_results(out, results)}")
    return 0


@torch.no_grad()
def residual_scores(model: Hybrid, report, alpha: float) -> dict[str, float]:
    """The residual's mean squared norm on the test rollouts, and how far it is from the true
    friction term (0, -α θ') there, relative to that term's size."""
    ys = report.predicted.transpose(0, 1)
    norm = float(model.residual_norm(report.t, ys))
    values = model.residual(report.t[0], ys)
    friction = torch.stack([torch.zeros_like(ys[..., 1]), -alpha * ys[..., 1]], -1)
    error = float((values - friction).norm() / friction.norm())
    return {"residual_norm": norm, "damping_error": error}


def plot(out: Path, test: Trajectories, reports: dict) -> None:
    """θ of the first test trajectory under each model."""
    fig, axes = _common.figure(1, 1, (8, 4))
    ax = axes[0][0]
    ax.plot(test.t, test.states[0, :, 0], "ko", ms=3, label="truth")
    for name, report in reports.items():
        ax.plot(report.t, report.predicted[0, :, 0], label=name)
    ax.set(xlabel="t", ylabel="θ", title="damped pendulum, a test trajectory")
    ax.legend()
    _common.save_figure(fig, out / "pendulum.png")


if __name__ == "__main__":
    raise SystemExit(_common.interruptible(main))
