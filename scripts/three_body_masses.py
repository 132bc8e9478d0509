"""Learn the three masses of the ACA paper's three-body problem under each gradient mode.

Zhuang et al. (ICML 2020, sec. 5): nondimensional Newtonian gravity (the catalogue's
``three_body_aca``), true masses (1.1, 1.1, 0.9), positions observed at 1000 times in [0, 1],
test on [0, 2] (extrapolation). The model is the exact gravity law with the masses learnable,
started uniformly in [0.9, 1.1] and solved with dopri5 at 1e-7; it is fitted (L-BFGS on the whole
trajectory) under ACA, Disc-Opt and Opt-Disc. A hybrid (gravity + neural residual) and a plain
neural ODE are the comparisons. The five fits are independent and run on ``--jobs`` processes
(five at most), each with ``--threads`` torch threads.

    python scripts/three_body_masses.py --out out/three_body

Writes ``OUT/trajectories.png``, ``OUT/masses.png``, a training log ``OUT/log_<run>.csv`` per
run and, last, ``OUT/results.json`` (``masses_true``; ``runs`` keyed ``aca``, ``disc-opt``,
``opt-disc``, ``hybrid``, ``neural``).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

if __name__ == "__main__":  # not when a test imports the script
    _common.quiet_interrupts_from_the_start()  # Ctrl-C while importing: one line too

import torch  # noqa: E402

import physode  # noqa: E402
import physode.systems  # noqa: E402
from physode.models import Hybrid, NeuralODE, PhysicsModel  # noqa: E402
from physode.train import Trainer, Trajectories, rollout_report  # noqa: E402

MASSES = ("m1", "m2", "m3")
POSITIONS = list(range(9))
SOLVER = {"method": "dopri5", "rtol": 1e-7, "atol": 1e-7}
# The order they start in on the workers: the longest first.
RUNS = ("opt-disc", "aca", "disc-opt", "hybrid", "neural")


@functools.cache
def ground_truth(t_end: float, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """States at ``points`` times in [0, t_end], solved with dop853 at 1e-12 (once a process)."""
    system = physode.systems.load("three_body_aca")
    t = torch.linspace(0, t_end, points, dtype=torch.float64)
    y0 = system.initial_state("aca").to(torch.float64)
    sol = physode.solve(system.vector_field(), y0, t, method="dop853", rtol=1e-12, atol=1e-12)
    return t, sol.ys


def initial_masses(seed: int) -> dict[str, float]:
    """Masses drawn uniformly from [0.9, 1.1]."""
    draw = 0.9 + 0.2 * torch.rand(3, generator=torch.Generator().manual_seed(seed),
                                  dtype=torch.float64)  # fmt: skip
    return dict(zip(MASSES, draw.tolist(), strict=True))


def fit(name: str, settings: dict) -> dict:
    """One of the five fits; returns its numbers and its rollout (run in a worker process, with
    ``--threads`` threads)."""
    torch.set_num_threads(settings["threads"])
    system = physode.systems.load("three_body_aca")
    t, ys = ground_truth(settings["t_train"], settings["points"])
    data = Trajectories(t, ys[None], system=system)
    init, seed, out = settings["init"], settings["seed"], Path(settings["out"])
    torch.manual_seed(seed)
    common = dict(observe=POSITIONS, log=str(out / f"log_{name}.csv"), seed=seed, **SOLVER)
    if name == "neural":
        model = NeuralODE(18, width=64, depth=2)
        config = dict(epochs=settings["neural_epochs"], window=20, batch_size=16,
                      batches_per_epoch=2, lr=3e-3, lr_schedule="cosine",
                      gradient="aca")  # fmt: skip
    else:
        model = PhysicsModel(system, MASSES, init=init)
        if name == "hybrid":
            model = Hybrid(model, NeuralODE(18, width=32, depth=2, zero_output=True))
        gradient = "aca" if name == "hybrid" else name
        config = dict(epochs=settings["lbfgs_epochs"], optimizer="lbfgs", lr=1.0,
                      gradient=gradient)  # fmt: skip
        if name == "opt-disc":
            # Opt-Disc re-solves the adjoint between all 1000 observation times, each epoch
            # costing several times an ACA epoch: it gets a time budget instead.
            config["time_limit"] = settings["opt_disc_seconds"]
    result = Trainer(model, data, **config, **common).fit()
    report = rollout_report(model, data, horizon=settings["t_train"], t_end=settings["t_test"],
                            system=system, observe=POSITIONS, conservation=False,
                            **SOLVER)  # fmt: skip
    run = {
        "train_seconds": result.train_seconds,
        "stopped_by_time_limit": result.stopped_early,
        "final_loss": result.final_loss,
        "epochs": len(result.history),
        "nfe_forward": sum(r["nfe_forward"] for r in result.history),
        "nfe_backward": sum(r["nfe_backward"] for r in result.history),
        "test_mse": report.mse,
        "train_mse": report.mse_within,
        "extrapolation_mse": report.mse_beyond,
    }
    if name != "neural":
        true = [system.parameters[m] for m in MASSES]
        masses = [result.physical_parameters[m] for m in MASSES]
        run["masses"] = masses
        run["max_rel_mass_error"] = max(abs(m - v) / v for m, v in zip(masses, true, strict=True))
        run["mass_history"] = [[r[f"param_{m}"] for m in MASSES] for r in result.history]
    return {"run": run, "t": report.t, "predicted": report.predicted[0], "truth": report.truth[0]}


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(_common.summary(__doc__), "out/three_body_masses")
    p.add_argument("--jobs", type=_common.positive_int, default=2, metavar="J",
                   help="worker processes, at most one per fit (default 2)")  # fmt: skip
    p.add_argument("--opt-disc-seconds", type=_common.positive_float, default=100.0,
                   metavar="SECONDS", help="training-time budget of the Opt-Disc fit, in "
                   "seconds (default 100)")  # fmt: skip
    args = p.parse_args(argv)
    out = _common.setup(args)
    system = physode.systems.load("three_body_aca")
    true = [system.parameters[m] for m in MASSES]
    init = initial_masses(args.seed)
    settings = {
        "t_train": 0.05 if args.quick else 1.0,
        "t_test": 0.1 if args.quick else 2.0,
        "points": 20 if args.quick else 1000,
        "lbfgs_epochs": 1 if args.quick else 13,
        "opt_disc_seconds": args.opt_disc_seconds,
        "neural_epochs": 1 if args.quick else 150,
        "init": init,
        "seed": args.seed,
        "threads": args.threads,
        "out": str(out),
    }
    jobs = min(args.jobs, len(RUNS))
    print(f"three-body masses: true {true}, initial {[round(v, 4) for v in init.values()]}; "
          f"fitting {', '.join(RUNS)} on {jobs} process{'es' if jobs > 1 else ''}")  # fmt: skip
    with _common.Stopwatch() as clock:
        if jobs > 1:
            done = _common.in_processes(fit, [(name, settings) for name in RUNS], jobs)
            fits = dict(zip(RUNS, done, strict=True))
        else:
            fits = {name: fit(name, settings) for name in RUNS}
    runs = {name: fits[name]["run"] for name in ("aca", "disc-opt", "opt-disc", "hybrid", "neural")}
    ratio = runs["neural"]["test_mse"] / max(runs["hybrid"]["test_mse"], 1e-300)
    results = {"masses_true": true, "masses_init": list(init.values()), "runs": runs,
               "neural_over_hybrid_test_mse": ratio, "wall_seconds": clock.seconds,
               "settings": settings, "quick": args.quick}  # fmt: skip
    rows = [{"run": name, **run} for name, run in runs.items()]
    print(_common.table(rows, ["run", "masses", "max_rel_mass_error", "train_seconds",
                               "test_mse", "extrapolation_mse"]))  # fmt: skip
    print(f"neural / hybrid test mse: {ratio:.3g}; wall time {clock.seconds:.1f} s")
    plot(out, fits, true, settings["t_train"])
    print(f"wrote {_common.write_results(out, results)}")
    return 0


def plot(out: Path, fits: dict, true: list[float], t_train: float) -> None:
    """Rollouts of each body's x coordinate, and the mass errors over the iterations."""
    fig, axes = _common.figure(1, 3, (15, 4))
    reference = fits["aca"]
    for body, ax in enumerate(axes[0]):
        ax.plot(reference["t"], reference["truth"][:, 3 * body], "k", lw=2, label="truth")
        for name, f in fits.items():
            ax.plot(f["t"], f["predicted"][:, 3 * body], "--", label=name)
        ax.axvline(t_train, color="grey", lw=0.8)
        ax.set(xlabel="t", ylabel=f"x{body + 1}", title=f"body {body + 1} (train | test)")
    axes[0][0].legend(fontsize=7)
    _common.save_figure(fig, out / "trajectories.png")
    fig, axes = _common.figure(1, 1)
    ax = axes[0][0]
    for mode in ("aca", "disc-opt", "opt-disc", "hybrid"):
        history = torch.tensor(fits[mode]["run"]["mass_history"])
        error = ((history - torch.tensor(true)).abs() / torch.tensor(true)).max(1).values
        ax.semilogy(range(1, len(error) + 1), error, marker="o", label=mode)
    ax.set(xlabel="L-BFGS iteration (epoch)", ylabel="max relative mass error")
    ax.legend()
    _common.save_figure(fig, out / "masses.png")


if __name__ == "__main__":
    raise SystemExit(_common.interruptible(main))
