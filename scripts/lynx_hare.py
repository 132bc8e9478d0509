"""Real data: Lotka-Volterra, a hybrid and a plain neural ODE fitted to the Hudson's Bay
lynx-hare pelts of 1900-1915 and forecasting 1916-1920.

* ``physics``: the catalogue's ``lotka_volterra`` (hare = prey x, lynx = predator y) with its four
  rates learnable, started from rough textbook values for these data;
* ``hybrid``: those equations (started from the fitted rates) plus a neural residual, trained
  with Adam (the rates keep learning);
* ``neural``: a plain neural ODE.

Every model's rollout starts from the 1900 observation; the physics and hybrid models are fitted
to the whole 1900-1915 series, the neural ODE to random 6-year windows of it.

    python scripts/lynx_hare.py --out out/lynx_hare

Writes ``OUT/forecast.png``, a training log ``OUT/log_<model>.csv`` per model and, last,
``OUT/results.json`` (``runs`` keyed ``physics``, ``hybrid``, ``neural``, each with ``fit_mse``,
``forecast_mse`` and, where it has them, the learned ``rates``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

if __name__ == "__main__":  # not when a test imports the script
    _common.quiet_interrupts_from_the_start()  # Ctrl-C while importing: one line too

import torch  # noqa: E402

import physode  # noqa: E402
import physode.data  # noqa: E402
import physode.systems  # noqa: E402
from physode.models import Hybrid, NeuralODE, PhysicsModel  # noqa: E402
from physode.train import Trainer, Trajectories, rollout_report  # noqa: E402

RATES = ("alpha", "beta", "gamma", "delta")
# Rough starting values for pelts in thousands (prey growth, predation, predator growth per prey,
# predator death), of the size reported in textbook fits of these data.
START = {"alpha": 0.5, "beta": 0.025, "gamma": 0.02, "delta": 0.8}
SOLVER = {"method": "dopri5", "rtol": 1e-7, "atol": 1e-7}
LAST_FIT_YEAR = 1915
SCALE = 50.0  # thousands of pelts: brings the network's inputs to order one


def scaled(y: torch.Tensor) -> torch.Tensor:
    """The networks' input features: populations in units of 50 thousand."""
    return y / SCALE


def residual_network(seed: int, width: int, zero: bool) -> NeuralODE:
    torch.manual_seed(seed)
    return NeuralODE(2, width=width, depth=2, input_transform=scaled, zero_output=zero).double()


def main(argv: list[str] | None = None) -> int:
    args = _common.parser(_common.summary(__doc__), "out/lynx_hare").parse_args(argv)
    out = _common.setup(args)
    series = physode.data.load_lynx_hare()
    years = torch.as_tensor(series.years)
    n_fit = int((years <= LAST_FIT_YEAR).sum())
    everything = Trajectories(series.t, series.ys[None])
    fit_data = Trajectories(series.t[:n_fit], series.ys[None, :n_fit])
    system = physode.systems.load("lotka_volterra")
    lbfgs_epochs = 2 if args.quick else 60
    adam_epochs = 3 if args.quick else 600
    neural_epochs = 2 if args.quick else 300

    runs: dict[str, dict] = {}
    reports = {}

    def record(name: str, model: torch.nn.Module, result) -> None:
        report = rollout_report(model, everything, horizon=float(series.t[n_fit - 1]),
                                conservation=False, **SOLVER)  # fmt: skip
        reports[name] = report
        runs[name] = {"fit_mse": report.mse_within, "forecast_mse": report.mse_beyond,
                      "train_seconds": result.train_seconds,
                      "epochs": len(result.history)}  # fmt: skip
        if result.physical_parameters:
            runs[name]["rates"] = result.physical_parameters

    physics = PhysicsModel(system, RATES, init=START)
    result = Trainer(physics, fit_data, epochs=lbfgs_epochs, optimizer="lbfgs", lr=1.0,
                     log=str(out / "log_physics.csv"), seed=args.seed, **SOLVER).fit()  # fmt: skip
    record("physics", physics, result)

    hybrid = Hybrid(PhysicsModel(system, RATES, init=result.physical_parameters),
                    residual_network(args.seed, 16, zero=True))  # fmt: skip
    result = Trainer(hybrid, fit_data, epochs=adam_epochs, lr=1e-3, lr_schedule="cosine",
                     grad_clip=10.0, log=str(out / "log_hybrid.csv"), seed=args.seed,
                     progress=False if args.quick else "auto",
                     **SOLVER).fit()  # fmt: skip
    record("hybrid", hybrid, result)

    neural = residual_network(args.seed, 32, zero=False)
    result = Trainer(neural, fit_data, epochs=neural_epochs, lr=1e-2, lr_schedule="cosine",
                     grad_clip=10.0, window=6, batch_size=16, log=str(out / "log_neural.csv"),
                     progress=False if args.quick else "auto", seed=args.seed,
                     **SOLVER).fit()  # fmt: skip
    record("neural", neural, result)

    results = {"runs": runs, "fit_years": [int(years[0]), LAST_FIT_YEAR],
               "forecast_years": [LAST_FIT_YEAR + 1, int(years[-1])],
               "start_rates": START, "quick": args.quick}  # fmt: skip
    rows = [{"model": name, **run} for name, run in runs.items()]
    for row in rows:
        row["rates"] = [row["rates"][r] for r in RATES] if "rates" in row else None
    print(_common.table(rows, ["model", "fit_mse", "forecast_mse", "rates", "train_seconds"]))
    plot(out, series, years, reports, n_fit)
    print(f"wrote {_common.write_results(out, results)}")
    return 0


def plot(out: Path, series, years: torch.Tensor, reports: dict, n_fit: int) -> None:
    """Observations and each model's fit and forecast, for hare and lynx."""
    fig, axes = _common.figure(1, 2, (12, 4))
    for column, ax in enumerate(axes[0]):
        ax.plot(years, series.ys[:, column], "ko", label="observed")
        for name, report in reports.items():
            ax.plot(years, report.predicted[0, :, column], label=name)
        ax.axvline(float(years[n_fit - 1]) + 0.5, color="grey", lw=0.8)
        ax.set(xlabel="year", ylabel="pelts (thousands)", title=series.state_names[column])
    axes[0][0].legend()
    _common.save_figure(fig, out / "forecast.png")


if __name__ == "__main__":
    raise SystemExit(_common.interruptible(main))
