"""How accurate is each gradient mode? Relative gradient error against solver tolerance for
Disc-Opt, ACA and Opt-Disc, and torchdiffeq's adjoint, on two problems.

* ``spiral``: the mean squared error of Onken & Ruthotto's spiral model (x³ → Linear(2, 50) → tanh
  → Linear(50, 2), random weights) against the spiral's 30 samples on [0, 1.5];
* ``three_body``: the mean squared error of the positions of the ACA paper's three-body problem on
  [0, 0.5] (50 samples) as a function of the three masses, at masses 5 % off the truth.

The reference gradient is Disc-Opt through dop853 at rtol = atol = 1e-12 (float64): the
derivative of the exact loss to about that accuracy. Every mode solves with dopri5 at
rtol = atol = tol; the gradient error of Disc-Opt and ACA is the solver's discretisation error
(they differentiate the computed loss exactly, and equal each other to rounding), while Opt-Disc
adds the error of its backward solve.

    python scripts/gradient_accuracy.py --out out/gradient_accuracy

Needs torchdiffeq (``pip install physode[test]``). Writes ``OUT/gradient_accuracy.png`` and,
last, ``OUT/results.json`` (``problems.<name>``: ``tolerances``; ``errors``, ``seconds`` and
``nfe_backward`` keyed by mode, one value per tolerance; ``aca_vs_disc_opt``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

if __name__ == "__main__":  # not when a test imports the script
    _common.quiet_interrupts_from_the_start()  # Ctrl-C while importing: one line too

import torch  # noqa: E402
from spiral_disc_vs_opt import SAMPLES, T_END, make_model  # noqa: E402

import physode  # noqa: E402
import physode.systems  # noqa: E402
from physode.models import PhysicsModel  # noqa: E402

MODES = ("disc-opt", "aca", "opt-disc", "torchdiffeq-adjoint")


def gradient(
    model, y0, t, target, mode: str, tol: float, observe: list[int] | None = None
) -> tuple[torch.Tensor, float, int]:
    """Flat loss gradient of one mode at tolerance ``tol``, its wall time and backward nfe."""
    params = list(model.parameters())
    start = time.perf_counter()
    nfe_backward = 0
    if mode == "torchdiffeq-adjoint":
        import torchdiffeq

        ys = torchdiffeq.odeint_adjoint(model, y0, t, method="dopri5", rtol=tol, atol=tol,
                                        adjoint_params=tuple(params))  # fmt: skip
    elif mode == "reference":
        ys = physode.odeint(model, y0, t, method="dop853", rtol=tol, atol=tol,
                            gradient="disc-opt")  # fmt: skip
    else:
        sol = physode.solve(model, y0, t, method="dopri5", rtol=tol, atol=tol, gradient=mode)
        ys = sol.ys
    if observe is not None:
        ys = ys[..., observe]
    loss = (ys[1:] - target[1:]).pow(2).mean()
    grads = torch.autograd.grad(loss, params)
    if mode not in ("torchdiffeq-adjoint", "reference"):
        nfe_backward = int(sol.stats.nfe_backward)
    seconds = time.perf_counter() - start
    return torch.cat([g.reshape(-1) for g in grads]), seconds, nfe_backward


def spiral_problem(seed: int) -> tuple:
    """The spiral model at random weights, its initial state, times and target."""
    system = physode.systems.load("spiral")
    t = torch.linspace(0, T_END, SAMPLES, dtype=torch.float64)
    y0 = system.initial_state("onken_ruthotto").to(torch.float64)
    target = physode.odeint(system.vector_field(), y0, t, method="dop853", rtol=1e-12,
                            atol=1e-12)  # fmt: skip
    return make_model(seed), y0, t, target, None


def three_body_problem(seed: int) -> tuple:
    """Gravity with learnable masses 5 % off, the ACA initial state, times and positions."""
    system = physode.systems.load("three_body_aca")
    t = torch.linspace(0, 0.5, 50, dtype=torch.float64)
    y0 = system.initial_state("aca").to(torch.float64)
    target = physode.odeint(system.vector_field(), y0, t, method="dop853", rtol=1e-12,
                            atol=1e-12)  # fmt: skip
    off = {"m1": 1.1 * 1.05, "m2": 1.1 * 0.95, "m3": 0.9 * 1.05}
    return PhysicsModel(system, list(off), init=off), y0, t, target, list(range(9))


PROBLEMS = {"spiral": spiral_problem, "three_body": three_body_problem}


def measure(problem: tuple, tolerances: list[float]) -> dict:
    """Gradient errors of every mode at every tolerance on one problem."""
    model, y0, t, target, observe = problem
    if observe is not None:
        target = target[..., observe]
    reference, _, _ = gradient(model, y0, t, target, "reference", 1e-12, observe)
    errors: dict[str, list] = {mode: [] for mode in MODES}
    seconds: dict[str, list] = {mode: [] for mode in MODES}
    nfe_backward: dict[str, list] = {mode: [] for mode in MODES}
    aca_vs_disc_opt = []
    for tol in tolerances:
        grads = {}
        for mode in MODES:
            grads[mode], wall, nfe = gradient(model, y0, t, target, mode, tol, observe)
            errors[mode].append(float((grads[mode] - reference).norm() / reference.norm()))
            seconds[mode].append(wall)
            nfe_backward[mode].append(nfe)
        gap = (grads["aca"] - grads["disc-opt"]).norm() / grads["disc-opt"].norm()
        aca_vs_disc_opt.append(float(gap))
    return {"tolerances": tolerances, "errors": errors, "seconds": seconds,
            "nfe_backward": nfe_backward, "aca_vs_disc_opt": aca_vs_disc_opt}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(_common.summary(__doc__), "out/gradient_accuracy")
    args = p.parse_args(argv)
    try:
        import torchdiffeq  # noqa: F401
    except ImportError:
        p.exit(1, f"{p.prog}: error: needs torchdiffeq for its adjoint "
                  "(pip install physode[test] or torchdiffeq)\n")  # fmt: skip
    out = _common.setup(args)
    tolerances = [1e-3, 1e-6] if args.quick else [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9]
    problems = {}
    for name, make in PROBLEMS.items():
        problems[name] = measure(make(args.seed), tolerances[:1] if args.quick and
                                 name == "three_body" else tolerances)  # fmt: skip
    results = {"problems": problems, "reference": "disc-opt, dop853, rtol = atol = 1e-12",
               "quick": args.quick}  # fmt: skip
    for name, found in problems.items():
        rows = []
        for i, tol in enumerate(found["tolerances"]):
            row = {"tol": tol, **{mode: found["errors"][mode][i] for mode in MODES}}
            row["aca vs disc-opt"] = found["aca_vs_disc_opt"][i]
            rows.append(row)
        print(f"{name}: relative gradient error against the reference")
        print(_common.table(rows, ["tol", *MODES, "aca vs disc-opt"]))
    plot(out, problems)
    print(f"wrote {_common.write_results(out, results)}")
    return 0


def plot(out: Path, problems: dict) -> None:
    fig, axes = _common.figure(1, len(problems), (6 * len(problems), 4.5))
    for ax, (name, found) in zip(axes[0], problems.items(), strict=True):
        for (mode, values), marker in zip(found["errors"].items(), "osx^", strict=True):
            ax.loglog(found["tolerances"], values, marker=marker, label=mode)
        ax.set(xlabel="rtol = atol", ylabel="relative gradient error", title=name)
        ax.legend()
    _common.save_figure(fig, out / "gradient_accuracy.png")


if __name__ == "__main__":
    raise SystemExit(_common.interruptible(main))
