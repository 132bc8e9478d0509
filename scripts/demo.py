"""physode end to end: simulate a three-body data set, check it, fit the masses and then a hybrid
with ACA, and check the trained model's masses and the conservation of its rollouts.

1. ``physode.data.simulate``: trajectories of the catalogue's ``three_body_aca`` system (the ACA
   paper's nondimensional gravity, masses 1.1, 1.1, 0.9) from its distribution of initial states,
   stored in ``OUT/three_body.h5`` with a train/val/test split;
2. ``physode.data.check``: the invariants (energy, momentum, angular momentum) along the stored
   trajectories;
3. ``physode.train.Trainer``, physics first, then a residual (docs/training.md): gravity with
   unknown masses (started in [0.9, 1.1]) fitted to the training split with ACA gradients
   (L-BFGS, whole trajectories); then a hybrid of that physics plus a neural residual trains on
   from the fitted masses, logged and checkpointed. A hybrid trained from the start leaves the
   masses 1-16 % off, depending on the seed: its residual takes up part of what they explain;
4. the recovered masses, the rollout errors on the test split within and beyond the training
   horizon, and the conservation of the rollouts next to the ground truth's. The invariants are
   the true system's, so the rollouts of the physics part alone (learned masses, no residual)
   are shown too: they separate what the masses' errors do to the invariants from what the
   residual does.

    python scripts/demo.py --out out/demo

Writes ``OUT/results.json``, ``OUT/three_body.h5``, ``OUT/log.csv``, ``OUT/checkpoints/``,
``OUT/training.png``, ``OUT/rollout.png``, ``OUT/data_drift.png`` and ``OUT/rollout_drift.png``.
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
from physode.train import Trainer  # noqa: E402

SYSTEM = "three_body_aca"
MASSES = ("m1", "m2", "m3")


def main(argv: list[str] | None = None) -> int:
    args = _common.parser(_common.summary(__doc__), "out/demo").parse_args(argv)
    out = _common.setup(args)
    quick = args.quick
    system = physode.systems.load(SYSTEM)
    true = [system.parameters[m] for m in MASSES]
    t_end = 0.1 if quick else 0.25

    with _common.Stopwatch() as total:
        print(f"1. simulating {SYSTEM} to {out / 'three_body.h5'}")
        path = out / "three_body.h5"
        simulated = physode.data.simulate(
            SYSTEM, trajectories=4 if quick else 8, t_end=t_end, points=21 if quick else 51,
            out=path, seed=args.seed, split=(0.5, 0.25, 0.25), force=True, quiet=quick,
        )
        print(simulated.summary())

        print("\n2. checking the stored trajectories' invariants")
        data_check = physode.data.check(path, tolerance=1e-8)
        print(data_check.table())
        data_check.plot(out / "data_drift.png")

        print("\n3a. fitting gravity with unknown masses to the data, ACA gradients")
        draw = torch.rand(3, generator=torch.Generator().manual_seed(args.seed),
                          dtype=torch.float64)  # fmt: skip
        init = dict(zip(MASSES, (0.9 + 0.2 * draw).tolist(), strict=True))
        torch.manual_seed(args.seed)
        physics = PhysicsModel(system, MASSES, init=init)
        settings = dict(
            optimizer="lbfgs", lr=1.0, batch_size=64, observe=list(range(9)), gradient="aca",
            method="dopri5", rtol=1e-7, atol=1e-7, progress="auto", seed=args.seed,
        )  # fmt: skip
        fitted = Trainer(physics, path, epochs=2 if quick else 10, **settings).fit()
        print("\n3b. adding a neural residual: the hybrid trains on from the fitted masses")
        model = Hybrid(physics, NeuralODE(18, width=32, depth=2, zero_output=True))
        trainer = Trainer(
            model, path, epochs=1 if quick else 5, log=str(out / "log.csv"),
            checkpoint_dir=str(out / "checkpoints"), **settings,
        )  # fmt: skip
        result = trainer.fit()

        print("\n4. results")
        report = trainer.evaluate(t_end=2 * t_end, conservation_tolerance=1e-6)
    masses = [result.physical_parameters[m] for m in MASSES]
    errors = [abs(m - v) / v for m, v in zip(masses, true, strict=True)]
    rows = [{"mass": m, "true": v, "initial": init[m], "learned": w, "rel_error": e}
            for m, v, w, e in zip(MASSES, true, masses, errors, strict=True)]  # fmt: skip
    print(_common.table(rows, ["mass", "true", "initial", "learned", "rel_error"]))
    print(report)
    drift = physics_only_drift(system, model, report, trainer.held_out_data().params)
    print("worst relative drift of the true invariants: the hybrid's rollouts, the physics part "
          "alone (learned masses, no residual), the truth")  # fmt: skip
    print(_common.table(drift, ["invariant", "hybrid", "physics_only", "truth"]))

    results = {
        "data": {"path": str(path), "trajectories": len(physode.data.load(path)),
                 "check_passed": data_check.passed},  # fmt: skip
        "masses_true": true,
        "masses_init": list(init.values()),
        "masses": masses,
        "max_rel_mass_error": max(errors),
        "train_seconds": fitted.train_seconds + result.train_seconds,
        "final_loss": result.final_loss,
        "best_val_loss": result.best_val_loss,
        "rollout": report.to_dict(),
        "rollout_drift": drift,
        "wall_seconds": total.seconds,
        "quick": quick,
    }
    plot(out, [fitted, result], report, true)
    _common.write_results(out, results)  # last: a results file stands for a finished run
    print(f"\ndone in {total.seconds:.1f} s; wrote {out / 'results.json'} and the plots")
    return 0


def physics_only_drift(system, model, report, params) -> list[dict]:
    """Worst relative drift of each true invariant along the hybrid's rollouts, along rollouts of
    its physics part alone and along the truth. The invariants are the true system's, so masses a
    little off make a rollout drift even where the residual adds nothing: the physics-only column
    separates that from what the residual changes."""
    y0 = report.truth[:, 0]
    with torch.no_grad():
        physics = physode.odeint(model.physics, y0, report.t.to(y0.dtype), method="dop853",
                                 rtol=1e-10, atol=1e-10)  # fmt: skip
    alone = physode.diagnostics.conservation(system, physics, t=report.t, p=params)
    reports = (report.conservation_model, alone, report.conservation_truth)
    return [
        {"invariant": name, **{key: float(r[name].max_rel_drift.max()) for key, r in
                               zip(("hybrid", "physics_only", "truth"), reports, strict=True)}}
        for name in alone.invariants
    ]  # fmt: skip


def plot(out: Path, results: list, report, true: list[float]) -> None:
    """Training curves of both stages (physics, then hybrid), one after the other, the test
    rollouts against the truth, and the rollouts' drift."""
    history = [row for result in results for row in result.history]
    epochs = range(1, len(history) + 1)
    fig, axes = _common.figure(1, 2, (11, 4))
    axes[0][0].semilogy(epochs, [row["loss"] for row in history], marker="o", label="train")
    axes[0][0].semilogy(epochs, [row["val_loss"] for row in history], marker="s",
                        label="validation")  # fmt: skip
    axes[0][0].set(xlabel="L-BFGS iteration (physics, then hybrid)", ylabel="MSE of positions")
    axes[0][0].legend()
    for i, m in enumerate(MASSES):
        values = torch.tensor([row[f"param_{m}"] for row in history])
        axes[0][1].semilogy(epochs, (values - true[i]).abs() / true[i], marker="o", label=m)
    for ax in axes[0]:
        ax.axvline(len(results[0].history) + 0.5, color="grey", lw=0.8)
    axes[0][1].set(xlabel="L-BFGS iteration", ylabel="relative mass error")
    axes[0][1].legend()
    _common.save_figure(fig, out / "training.png")

    fig, axes = _common.figure(1, 3, (15, 4))
    for body, ax in enumerate(axes[0]):
        ax.plot(report.t, report.truth[0, :, 3 * body], "k", lw=2, label="truth")
        ax.plot(report.t, report.predicted[0, :, 3 * body], "r--", label="hybrid")
        ax.axvline(report.horizon, color="grey", lw=0.8)
        ax.set(xlabel="t", ylabel=f"x{body + 1}", title=f"test trajectory, body {body + 1}")
    axes[0][0].legend()
    _common.save_figure(fig, out / "rollout.png")
    if report.conservation_model is not None:
        report.conservation_model.plot(out / "rollout_drift.png")


if __name__ == "__main__":
    raise SystemExit(_common.interruptible(main))
