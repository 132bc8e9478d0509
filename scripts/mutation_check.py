"""Strength check of the test suite: plant known bugs in physode, one at a time, and see tests fail.

Each mutant below changes one piece of physode's source, as a plausible bug would: a sign, a
constant of the step controller, a term of the Euler-Lagrange equations, a point left out of the
loss. For each, the script copies the package and its tests to a temporary folder, plants the
mutant there and runs the test files that cover that code (``pytest -x``). A mutant is
``caught`` when they fail and ``SURVIVED`` when they pass: then no test pins that behaviour.
Mutants marked equivalent change nothing physode promises (the reason is printed); they are
run and reported but not counted. A mutant whose original text is no longer in the source is
``stale``: the code moved, and the mutant must be updated with it.

The first runs, of 71 such mutants (2026-12-06), found 32 that survived. Six of them changed
nothing physode promises; two of those are kept below as equivalent, the others dropped. Tests
added since catch the other 26, which the list keeps so that they stay caught: 58 of 58 counted
mutants were caught then; ``--list`` counts the mutants added since. Not a test: the whole run
takes about 8 minutes on two cores.

Usage::

    python scripts/mutation_check.py                  # every mutant
    python scripts/mutation_check.py --only control   # mutants of files whose path has "control"
    python scripts/mutation_check.py --list           # the mutants, and whether any is stale
    python scripts/mutation_check.py --quick          # a smoke test: the QUICK mutants
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What --quick runs (as --only would): two mutants whose tests take seconds.
QUICK = ("_conservation",)
sys.path.insert(0, str(ROOT / "scripts"))

import _common  # noqa: E402

COPIED = ("physode", "systems", "tests", "pyproject.toml")

SOLVER = (
    "test_step_control", "test_solver_convergence", "test_solver_reference", "test_solver_errors",
    "test_gradients", "test_per_sample", "test_symplectic",
)  # fmt: skip
SYMBOLIC = ("test_symbolic", "test_symbolic_validation", "test_systems_catalogue")
TRAIN = ("test_train", "test_models")
MISSING = ("test_train_missing",)
DIVERGE = ("test_train_diverge", "test_train_after_divergence")
DATA = ("test_data_store", "test_data_simulate", "test_data_dataset")
CALIBRATION = ("test_calibration",)
NAMES = ("test_symbolic_names",)
SECTIONS = ("test_sections",)
TUPLES = ("test_tuple_states",)
EVENTS = ("test_events",)
HNN = ("test_hnn",)
TIMES = ("test_time_gradients",)
PARALLEL = ("test_data_parallel",)
DISTRIBUTED = ("test_train_distributed",)
LOCKS = ("test_train_checkpoint_lock",)
CLI = ("test_cli",)
SCALING = ("test_symbolic_scaling",)


@dataclass(frozen=True)
class Mutant:
    path: str
    old: str
    new: str
    what: str
    tests: tuple[str, ...]
    equivalent: str = ""  # why it changes nothing promised, for the mutants that do not count


MUTANTS = (
    # -- step control (physode/solvers/control.py)
    Mutant("physode/solvers/control.py", "beta = self.beta if accepted else 0.0",
           "beta = self.beta", "PI memory kept after a rejection", SOLVER),
    Mutant("physode/solvers/control.py", "upper = self.max_factor if accepted else 1.0",
           "upper = self.max_factor", "a rejected step may grow", SOLVER,
           equivalent="a rejected ratio exceeds 1, so 0.9 ratio^-alpha < 1 already"),
    Mutant("physode/solvers/control.py", "max(previous_ratio, 1e-4) ** beta",
           "max(previous_ratio, 1e-4) ** -beta", "PI memory with the wrong sign", SOLVER),
    Mutant("physode/solvers/control.py", "safety: float = 0.9", "safety: float = 0.97",
           "safety factor", SOLVER),
    Mutant("physode/solvers/control.py",
           "return torch.maximum(y0.abs(), y1.abs()).mul_(rtol).add_(atol)",
           "return y0.abs().mul(rtol).add_(atol)", "error scale from the step's start only",
           SOLVER),
    Mutant("physode/solvers/control.py", "denominator = xp.clip(e5 + 0.01 * e3,",
           "denominator = xp.clip(e5 + 0.1 * e3,", "DOP853's combined error ratio", SOLVER),
    Mutant("physode/solvers/control.py", "h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1",
           "h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.1 * d0 / d1", "first step's trial",
           SOLVER),
    Mutant("physode/solvers/control.py", "    return min(100 * h0, h1)",
           "    return min(10 * h0, h1)", "first step's cap", SOLVER),
    Mutant("physode/solvers/control.py", "h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))",
           "h1 = (0.01 / max(d1, d2)) ** (1.0 / order)", "first step's exponent", SOLVER),
    # -- the shared loop (physode/solvers/loop.py)
    Mutant("physode/solvers/loop.py", "_LANDING_SLACK = 1e-9", "_LANDING_SLACK = 1e-3",
           "steps stretched further to land on an output", SOLVER,
           equivalent="a tuning constant: a step 0.1 % longer, still error-controlled"),
    Mutant("physode/solvers/loop.py", "accepted = ratio <= 1.0", "accepted = ratio <= 1.5",
           "acceptance threshold", SOLVER),
    Mutant("physode/solvers/loop.py",
           "h = direction * max(abs(h_next), abs(h)) if landing else h_next", "h = h_next",
           "a short landing step shrinks the next ones", SOLVER),
    Mutant("physode/solvers/loop.py", "            previous_ratio = ratio\n", "            pass\n",
           "PI memory never updated", SOLVER),
    Mutant("physode/solvers/loop.py", "                    theta = (times[k] - t) / h_step",
           "                    theta = (times[k] - t) / h", "dense output at the wrong point",
           SOLVER),
    Mutant("physode/solvers/loop.py", "        target = t_end if dense else times[k]",
           "        target = times[k]", "dense methods land on every output", SOLVER),
    Mutant("physode/solvers/loop.py",
           "unchecked.append(_Unchecked(torch.isfinite(y1).all(),",
           "unchecked.append(_Unchecked(torch.isfinite(y1).all() | True,",
           "fixed-step solves go on after NaN", SOLVER),
    # -- the per-sample loop
    Mutant("physode/solvers/per_sample.py", "        accept = ratio <= 1.0\n",
           "        accept = ratio <= 1.5\n", "per-sample acceptance threshold", SOLVER),
    Mutant("physode/solvers/per_sample.py",
           "        previous = xp.where(accept, ratio, previous)\n", "",
           "per-sample PI memory never updated", SOLVER),
    Mutant("physode/solvers/per_sample.py", "        h = xp.where(landed, longer, h_next)\n",
           "        h = h_next\n", "per-sample: a short landing step shrinks the next ones",
           SOLVER),
    Mutant("physode/solvers/per_sample.py",
           "    if n_finite == f0.shape[0]:\n        return f0\n",
           "    if True:\n        return f0\n",
           "per-sample Disc-Opt: a row where func is undefined keeps its graph (NaN gradients)",
           ("test_per_sample",)),
    Mutant("physode/solvers/per_sample.py",
           "        return (None, None, adjoint + grad_ys[0], *param_grads)",
           "        return (None, None, adjoint, *param_grads)",
           "per-sample ACA drops the gradient of ys[0]", SOLVER),
    # -- the Runge-Kutta step (physode/solvers/rk.py)
    Mutant("physode/solvers/rk.py", "    return time(t + c * h)\n",
           "    return time(t + c * h * 1.0001)\n", "stage times off (shared step)", SOLVER),
    Mutant("physode/solvers/rk.py", "        return torch.add(t, h, alpha=c)\n",
           "        return torch.add(t, h, alpha=c * 1.0001)\n", "stage times off (per row, torch)",
           SOLVER),
    Mutant("physode/solvers/rk.py", "    if isinstance(h, np.ndarray):\n        return t + h * c\n",
           "    if isinstance(h, np.ndarray):\n        return t + h * c * 1.0001\n",
           "stage times off (per row, NumPy)", SOLVER),
    # -- tableaus and symplectic methods
    Mutant("physode/solvers/tableau.py",
           "(0.0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 3270041"
           "0799)",
           "(0.0, 131558114200 / 32700410799 + 0.01, -68118460800 / 10900136933 - 0.01, 874874"
           "79700 / 32700410799)", "dopri5 dense output, end point kept", SOLVER),
    Mutant("physode/solvers/symplectic.py", "_w1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))",
           "_w1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.1))", "Yoshida's weight", SOLVER),
    Mutant("physode/solvers/symplectic.py", ") or _changes_with_parameters(",
           ") and _changes_with_parameters(", "drift by v though a parameter makes dq/dt", SOLVER),
    Mutant("physode/solvers/symplectic.py", "(f_qv, v_shifted), (later, v))",
           "(f_qv, v_shifted))", "drift by v though dq/dt changes with t", SOLVER),
    Mutant("physode/solvers/symplectic.py",
           'if not declares(func, "drift_is_velocity", method):', "if False:",
           "drift by v taken from the probes alone", SOLVER),
    # -- gradients
    Mutant("physode/gradients/aca.py",
           "grad_y0 = grad_ys[0] if adjoint is None else adjoint + grad_ys[0]",
           "grad_y0 = grad_ys[0] if adjoint is None else adjoint",
           "ACA drops the gradient of ys[0]", SOLVER),
    Mutant("physode/gradients/aca.py",
           "                        targets.append(stepper.interpolate(y, h, step.ks, theta))",
           "                        targets.append(stepper.interpolate(y, h, step.ks, theta)"
           ".detach())", "ACA drops interpolated outputs", SOLVER),
    Mutant("physode/gradients/optdisc.py", "z[n : 2 * n] + grad_ys[k].reshape(-1)",
           "z[n : 2 * n]", "Opt-Disc drops the adjoint's jumps", SOLVER),
    Mutant("physode/gradients/optdisc.py",
           "                z = torch.cat([y_stored.reshape(-1), z[n:]])\n",
           "                pass\n", "Opt-Disc ignores restart", SOLVER),
    Mutant("physode/gradients/optdisc.py", "    if trace is None:\n        return outputs\n",
           "    return outputs\n", "Opt-Disc restarts at the outputs only", SOLVER),
    Mutant("physode/gradients/optdisc.py",
           "            groups += [2 * n + end for end in itertools.accumulate(sizes)]\n",
           "            pass\n", "Opt-Disc always a seminorm", SOLVER),
    Mutant("physode/gradients/optdisc.py", "[f], [y, *self.params], [-adjoint])",
           "[f], [y, *self.params], [adjoint])", "Opt-Disc adjoint sign", SOLVER),
    Mutant("physode/gradients/optdisc.py", "                first_step = abs(result.h)\n",
           "                pass\n", "Opt-Disc estimates each interval's first step", SOLVER),
    # -- symbolic mechanics and code generation
    Mutant("physode/symbolic/_mechanics.py", "        f -= real_derivative(momenta[i], time)\n", "",
           "Euler-Lagrange without dp/dt's explicit time part", SYMBOLIC),
    Mutant("physode/symbolic/_mechanics.py",
           "            f -= real_derivative(dissipation, velocities[i])\n",
           "            f += real_derivative(dissipation, velocities[i])\n",
           "Rayleigh sign", SYMBOLIC),
    Mutant("physode/symbolic/_mechanics.py", "            f += forces[i]\n",
           "            f -= forces[i]\n", "generalized force sign (Lagrangian)", SYMBOLIC),
    Mutant("physode/symbolic/_mechanics.py",
           "        dp = [a + b for a, b in zip(dp, forces, strict=True)]",
           "        dp = [a - b for a, b in zip(dp, forces, strict=True)]",
           "generalized force sign (Hamiltonian)", SYMBOLIC),
    Mutant("physode/symbolic/_mechanics.py", "    return sympy.expand_mul(total - lagrangian)",
           "    return sympy.expand_mul(total + lagrangian)", "energy function sign", SYMBOLIC),
    Mutant("physode/symbolic/_codegen.py",
           'if k == 2 else f"{b} ** {k}"', 'if k == 2 else f"{b} ** {k + 1}"',
           "x^(k+1/2) for k >= 3", SYMBOLIC),
    # -- diagnostics, models, training, data
    Mutant("physode/diagnostics/_conservation.py", "        abs_drift = (value - value[:1]).abs()",
           "        abs_drift = (value - value[-1:]).abs()", "drift measured from the end",
           ("test_diagnostics",)),
    Mutant("physode/diagnostics/_conservation.py", "        max_rel = max_abs / scale",
           "        max_rel = max_abs / (2 * scale)", "relative drift's scale",
           ("test_diagnostics",)),
    Mutant("physode/models/hybrid.py",
           "            self.aphynity_lambda += self.aphynity.tau * float(trajectory_loss)",
           "            self.aphynity_lambda += self.aphynity.tau", "APHYNITY's lambda update",
           TRAIN),
    Mutant("physode/models/hybrid.py", "        return physics + residual\n",
           "        return physics - residual\n", "hybrid's sign", TRAIN),
    Mutant("physode/train/trainer.py", "        pred, ref = sol.ys[1:], target[1:]\n",
           "        pred, ref = sol.ys, target\n", "loss counts each window's start", TRAIN),
    Mutant("physode/train/trainer.py", "        pred, ref = sol.ys[1:], target[1:]\n",
           "        pred, ref = sol.ys[1:-1], target[1:-1]\n", "loss drops each window's end",
           TRAIN),
    Mutant("physode/train/trainer.py",
           "            if c.patience is not None and self.bad_epochs >= c.patience:",
           "            if c.patience is not None and self.bad_epochs > c.patience:",
           "patience off by one", TRAIN),
    Mutant("physode/train/trainer.py",
           "        improved = val is not None and val < self.best_val_loss - c.min_delta",
           "        improved = val is not None and val < self.best_val_loss",
           "min_delta ignored", TRAIN),
    Mutant("physode/train/trainer.py",
           "            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)",
           "            pass", "grad_clip ignored", TRAIN),
    Mutant("physode/train/trainer.py", "            batches = batches[: c.batches_per_epoch]",
           "            batches = batches[: c.batches_per_epoch + 1]",
           "batches_per_epoch off by one", TRAIN),
    Mutant("physode/train/trainer.py",
           "        if finished and c.restore_best and self.best_state is not None:",
           "        if False:", "restore_best ignored", TRAIN),
    Mutant("physode/train/trainer.py",
           "self._failed_in_a_row += 1",
           "self._failed_in_a_row = 1 if skipped == 1 else self._failed_in_a_row + 1",
           "failures in a row start again at each epoch", DIVERGE),
    Mutant("physode/train/trainer.py", "                failed_solve = [failure.solution]\n",
           "                continue\n", "a skipped batch's evaluations not counted", DIVERGE),
    Mutant("physode/train/trainer.py",
           "        except BaseException as exc:", "        except KeyboardInterrupt as exc:",
           "only Ctrl-C goes back to the last epoch",
           DIVERGE),
    Mutant("physode/train/_warm_start.py", "_PHYSICS_PART = \"physics\"",
           "_PHYSICS_PART = \"residual\"", "warm start looks for the physics elsewhere", DIVERGE),
    Mutant("physode/train/evaluate.py", "    within = times_up_to(t, horizon)[1:]",
           "    within = t[1:] < horizon", "the horizon's sample counted beyond it", TRAIN),
    Mutant("physode/train/_times.py", "_ULPS = 8\n", "_ULPS = 0\n",
           "a sample time rounded past the cut-off left out (t_end=0.3 ends at 0.2)", TRAIN),
    Mutant("physode/data/simulation.py",
           "    eligible.sort(key=lambda k: (counts[k] - quotas[k], k))",
           "    eligible.sort(key=lambda k: (quotas[k] - counts[k], k))",
           "split leftovers to the smallest remainders", DATA),
    Mutant("physode/data/simulation.py", 'rng.normal(0.0, run["noise"],',
           'rng.normal(0.0, 0.5 * run["noise"],', "noise level halved", DATA),
    Mutant("physode/data/_chunks.py", '"shuffle": True, "fletcher32": True}',
           '"shuffle": True, "fletcher32": False}', "chunks written without checksums",
           ("test_data_chunks", "test_data_store")),
    Mutant("physode/solvers/control.py", "    shrink = math.sqrt(n_state / n_total)",
           "    shrink = 1.0", "sampled parameters loosen the tolerance", DATA),
    Mutant("physode/data/simulation.py", "        p_rows = p[:, None, :].expand(",
           "        p_rows = p[:1, None, :].expand(", "derivatives at the first row's parameters",
           DATA),
    Mutant("physode/data/simulation.py",
           '        drifted |= ~(worst <= run["drift_threshold"]) & ~failed',
           '        drifted |= (worst > run["drift_threshold"]) & ~failed',
           "a NaN drift is not flagged", DATA),
    Mutant("physode/train/evaluate.py",
           "system, _columns(y0, columns), times, params, max_step=max_step",
           "system, _columns(y0, columns), times, None, max_step=max_step",
           "truth past the data at the default parameters", TRAIN),
    Mutant("physode/train/evaluate.py",
           "        return error.sum() / count.clamp(min=1), count",
           "        return error.sum() / seen.numel(), count",
           "masked loss averaged over missing values too", MISSING),
    Mutant("physode/train/data.py",
           "    usable = whole[:, : last + 1] & (after[:, starts + length] > after[:, starts + 1])",
           "    usable = seen[:, : last + 1] & (after[:, starts + length] > after[:, starts + 1])",
           "windows start at incomplete states", MISSING),
    # -- reading data sets (physode/data/_store.py)
    Mutant("physode/data/_store.py", "    if version > FORMAT_VERSION:\n",
           "    if version > FORMAT_VERSION + 1:\n", "a newer format version read", DATA),
    Mutant("physode/data/_store.py", "    if complete is False:\n", "    if complete is None:\n",
           "an unfinished file read", DATA),
    Mutant("physode/data/_store.py",
           '    if not problems and sha256_text(attrs["system_spec"]) != attrs["system_spec_sha2'
           '56"]:', "    if False:", "the specification's checksum unchecked", DATA),
    Mutant("physode/data/_store.py",
           "    if not (isinstance(name, str) and name == FORMAT_NAME):",
           "    if not isinstance(name, str):", "a foreign HDF5 file read", DATA),
    # -- calibrating held-out trajectories (physode/train/evaluate.py)
    Mutant("physode/train/evaluate.py", "    last = count_up_to(data.t, until) - 1",
           "    last = len(data.t) - 1", "the calibration fits observations after T",
           CALIBRATION),
    Mutant("physode/train/evaluate.py", "        seen &= chosen\n", "        pass\n",
           "the calibration fits components outside observe", CALIBRATION),
    # -- how names are read (physode/symbolic/_names.py)
    Mutant("physode/symbolic/_names.py",
           "if name in SYMPY_CONSTANTS and name not in declared and before != \".\"",
           "if name in SYMPY_CONSTANTS and before != \".\"",
           "a declared parameter E warned of as Euler's number", NAMES),
    # -- the Hamiltonian neural network (physode/models/hamiltonian.py)
    Mutant("physode/models/hamiltonian.py", "return 1 - a * a", "return 1 + a * a",
           "the HNN's chain rule with a wrong slope of tanh", HNN),
    Mutant("physode/models/hamiltonian.py", "torch.cat([dh[..., n:], -dh[..., :n]], dim=-1)",
           "torch.cat([-dh[..., n:], dh[..., :n]], dim=-1)", "the HNN's field reversed", HNN),
    # -- terminal events (physode/events.py)
    Mutant("physode/events.py", "return t_event, y_root + f_r * (t_event - t_r)",
           "return t_event, y_root", "the event's state misses the Newton step's f dt",
           EVENTS),
    Mutant("physode/events.py", "if direction in (0, -sign):", "if direction in (0, sign):",
           "a single event's direction flipped", EVENTS),
    Mutant("physode/events.py", "changed &= before == -direction",
           "changed &= before == direction", "a per-row event's direction flipped", EVENTS),
    Mutant("physode/events.py", "n = INTERIOR_POINTS if dense else 0", "n = 0",
           "the event search checks only the ends of each step", EVENTS),
    Mutant("physode/events.py", "(0.0 if g_y is None else (g_y * f_r).sum())", "0.0",
           "the event's rate leaves out dg/dy . f", EVENTS),
    # -- tuple states (physode/solvers/_tuples.py)
    Mutant("physode/solvers/_tuples.py", "chunks = flat.split(self.sizes, dim=-1)",
           "chunks = flat.split(self.sizes[::-1], dim=-1)",
           "a tuple state's parts split in the wrong order", TUPLES),
    Mutant("physode/solvers/_tuples.py", "        if not self._checked:",
           "        if False:", "what func returns for a tuple state goes unchecked", TUPLES),
    # -- Poincare sections (physode/diagnostics/_sections.py)
    Mutant("physode/diagnostics/_sections.py", "- s2 * r * self.f_b", "+ s2 * r * self.f_b",
           "a sign of the cubic Hermite interpolant", SECTIONS),
    Mutant("physode/diagnostics/_sections.py", "crossing = {1: up, -1: down, 0: up | down}",
           "crossing = {1: down, -1: up, 0: up | down}", "the section's direction swapped",
           SECTIONS),
    Mutant("physode/diagnostics/_sections.py", "above = cut_values >= 0", "above = cut_values > 0",
           "a sample on the surface crosses nothing", SECTIONS),
    Mutant("physode/diagnostics/_sections.py", "b = 6 * rise - 4 * slope_a - 2 * slope_b",
           "b = 6 * rise - 2 * slope_a - 4 * slope_b",
           "the extrema of a named surface's cubic misplaced", SECTIONS),
    Mutant("physode/diagnostics/_sections.py", "_INTERIOR_POINTS = 3", "_INTERIOR_POINTS = 0",
           "a callable surface is not looked at between two samples", SECTIONS),
    Mutant("physode/solvers/_roots.py",
           "new_g_hi = torch.where(moves_lo, torch.where(again, g_hi / 2, g_hi), g_s)",
           "new_g_hi = torch.where(moves_lo, g_hi, g_s)",
           "plain regula falsi: the end near the root is never halved", SECTIONS,
           equivalent="its 40 fixed steps converge on a cubic without Illinois' halving too, "
           "only more slowly"),
    # -- gradients with respect to the output times (physode/gradients/times.py)
    Mutant("physode/gradients/times.py",
           "term = -_start_term(grad_y0, ctx.field(ctx.t0, y0.detach()))",
           "term = _start_term(grad_y0, ctx.field(ctx.t0, y0.detach()))",
           "the start time's term with the wrong sign", TIMES),
    Mutant("physode/gradients/times.py",
           "return torch.where(torch.isfinite(f), grad * f, 0.0).sum()",
           "return (grad * f).sum()",
           "t0's gradient NaN where func is undefined at y0 (the solve stops there)", TIMES),
    Mutant("physode/gradients/times.py",
           "terms.append((grad_ys[k] * field(ctx.times[k], y)).sum())",
           "terms.append((grad_ys[k] * field(ctx.times[0], y)).sum())",
           "every output's term evaluated at the first time", TIMES),
    # -- simulate through an executor (physode/data/_parallel.py, simulation.py)
    Mutant("physode/data/simulation.py", """            store(k, chunk)
            bar.update(""", """            store(0, chunk)
            bar.update(""", "a task's chunk stored as the first chunk's file", PARALLEL),
    Mutant("physode/data/_parallel.py", "TASKS_PER_WORKER = 2", "TASKS_PER_WORKER = 100",
           "every task submitted at once (memory not bounded)", PARALLEL),
    # -- data-parallel training (physode/train/trainer.py, _distributed.py)
    Mutant("physode/train/trainer.py", "loss_part = loss * weight / self._weight(data, batch)",
           "loss_part = loss", "each process's share weighed as a whole batch", DISTRIBUTED),
    Mutant("physode/train/trainer.py", "share = batch[group.rank :: group.world]",
           "share = batch", "every process solves the whole batch", DISTRIBUTED),
    # -- found by the hunts of 2026-12-07 (eleventh session)
    Mutant("physode/solvers/loop.py", "if not abs(h) > underflow * abs(t):",
           "if not abs(h) > underflow * max(1.0, abs(t)):",
           "an absolute floor under the step near t = 0 (false underflow on short scales)", SOLVER),
    Mutant("physode/solvers/control.py", "    if math.isinf(value):\n",
           "    if False:\n", "the first step's norm overflows in float32", SOLVER),
    Mutant("physode/symbolic/_codegen.py", "return torch.sign(x).where(x == x, x)",
           "return torch.sign(x)", "sign(NaN) is 0 in generated code", SYMBOLIC),
    Mutant("physode/data/_store.py", "elif t.shape[0] < 2:", "elif t.shape[0] < 1:",
           "a data set with one output time is read", DATA),
    Mutant("physode/models/hybrid.py",
           "        if residual.shape != y.shape and (\n",
           "        if False and (\n", "a residual of one column added to every component", TRAIN),
    Mutant("physode/train/trainer.py", "differ = _changes(data, mine, compared)",
           "differ = []", "a checkpoint resumed on other data", TRAIN),
    Mutant("physode/gradients/aca.py", "        _drop_steps_past_the_last_output(trace)\n",
           "", "ACA replays the steps after the last output of a failed solve", SOLVER),
    # -- found by the hunts of 2026-12-07 (twelfth session)
    Mutant("physode/solvers/loop.py",
           "rounding = _LANDING_ULPS * _EPS64 * max(abs(t), abs(t_next))", "rounding = 0.0",
           "a step that rounds onto the output time does not land", SOLVER),
    Mutant("physode/solvers/loop.py",
           "t_next = t + h if adaptive else anchor + (n_from_anchor + 1) * h", "t_next = t + h",
           "fixed steps summed one by one (their rounding drifts far from t = 0)", SOLVER),
    Mutant("physode/symbolic/_codegen.py", " or _transforms_active():", ":",
           "jacfwd / vmap of a vector field take the float fast path", SYMBOLIC),
    Mutant("physode/data/_store.py",
           "if any(isinstance(part, bool | np.bool_) for part in key):", "if False:",
           "a single boolean reads row 1 or row 0", DATA),
    Mutant("physode/data/torch_dataset.py", "if _identity(f, header) != self._identity:",
           "if False:", "a data set simulated again at the path is read with the old split", DATA),
    Mutant("physode/models/neural.py", "x = layer(x) if has_hooks(layer) else layer.forward(x)",
           "x = layer.forward(x)", "hooks on an MLP's layers skipped", TRAIN),
    Mutant("physode/train/data.py", "index = index[~np.isin(index, dataset.trajectories)]", "pass",
           "a TrajectoryDataset's trajectories validated and tested on", TRAIN),
    Mutant("physode/train/config.py", "elif self.step_size is not None:", "elif False:",
           "step_size with an adaptive method accepted until the first solve", TRAIN),
    Mutant("physode/_files.py", "fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)",
           "pass", "two runs share a checkpoint folder", LOCKS),
    Mutant("physode/_terminal.py", "        raise Terminated\n",
           "        raise KeyboardInterrupt\n", "SIGTERM reported as Ctrl-C (exit 130)", CLI),
    # -- found on 2026-12-07 (thirteenth session)
    Mutant("physode/symbolic/_codegen.py",
           'total = total + term if sign == "+" else total - term', "total = total + term",
           "a long sum printed as a call adds its negative terms", SCALING),
    # -- max_step (fourteenth session)
    Mutant("physode/solvers/loop.py", "            if abs(h) > h_max:\n", "            if False:\n",
           "max_step caps the first step only", SOLVER),
    Mutant("physode/solvers/loop.py", "h = direction * min(h_first, h_max)",
           "h = direction * h_first", "max_step leaves the automatic first step uncapped", SOLVER),
    Mutant("physode/solvers/per_sample.py",
           "        if max_step is not None:\n            h = xp.clip(h, -max_step, max_step)\n"
           "        previous", "        previous", "per-sample: max_step caps the first step only",
           SOLVER),
    Mutant("physode/gradients/optdisc.py", "                max_step=problem.max_step,\n", "",
           "Opt-Disc's backward solve ignores max_step", SOLVER),
    Mutant("physode/events.py",
           "max_step=max_step,\n            params=params,\n        )  # fmt: skip\n        y_root",
           "\n            params=params,\n        )  # fmt: skip\n        y_root",
           "an event's solve for the gradient ignores max_step", EVENTS),
)


def stale(mutant: Mutant) -> bool:
    """Whether the mutant's original text is gone from the source (the code moved on)."""
    return mutant.old not in (ROOT / mutant.path).read_text()


def run(mutant: Mutant, copy: Path, timeout: float) -> tuple[str, float, str]:
    """Plant ``mutant`` in ``copy``, run its tests, restore; (outcome, seconds, first failure)."""
    path = copy / mutant.path
    source = path.read_text()
    path.write_text(source.replace(mutant.old, mutant.new, 1))
    files = [f"tests/{name}.py" for name in mutant.tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files],
            cwd=copy, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(copy)},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "caught (timeout)", time.perf_counter() - start, ""
    finally:
        path.write_text(source)
    seconds = time.perf_counter() - start
    failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    first = failed[0].split(" ", 1)[1].split(" - ")[0] if failed else ""
    return ("caught" if done.returncode != 0 else "SURVIVED"), seconds, first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _common.add_quick(parser, f"the mutants of files whose path contains {' or '.join(QUICK)}")
    parser.add_argument("--only", nargs="+", default=[], metavar="TEXT",
                        help="mutants of files whose path contains one of these "
                        "(default: every mutant)")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--timeout", type=_common.positive_float, default=600.0,
                        metavar="SECONDS", help="time limit of each mutant's tests, in seconds; "
                        "one that runs longer counts as caught (default 600)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.only = [*args.only, *QUICK]
    chosen = [m for m in MUTANTS if not args.only or any(s in m.path for s in args.only)]
    if not chosen:
        # Zero mutants would read as "0 of 0 caught" and pass.
        parser.error(f"argument --only: no mutant's file path contains any of {args.only}")
    old = [m for m in chosen if stale(m)]
    if args.list:
        for m in chosen:
            mark = "stale " if m in old else ("equiv " if m.equivalent else "      ")
            print(f"{mark}{m.path:<38} {m.what}")
        print(f"{len(chosen)} mutants, {len(old)} stale")
        return 1 if old else 0
    print(f"{'outcome':<17} {'s':>5}  {'file':<38} mutant")
    counted = survived = 0
    with tempfile.TemporaryDirectory(prefix="physode-mutants-") as tmp:
        copy = Path(tmp)
        for name in COPIED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, copy / name)
        for m in chosen:
            if m in old:
                outcome, seconds, first = "stale", 0.0, "update this mutant"
            else:
                outcome, seconds, first = run(m, copy, args.timeout)
            note = f"  [equivalent: {m.equivalent}]" if m.equivalent else ""
            print(f"{outcome:<17} {seconds:5.1f}  {m.path:<38} {m.what}{note}", flush=True)
            if first:
                print(f"{'':<25}{first}")
            if not m.equivalent:
                counted += 1
                survived += outcome in ("SURVIVED", "stale")
    print(f"\n{counted - survived} of {counted} mutants caught "
          f"({len(chosen) - counted} equivalent ones not counted)")  # fmt: skip
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(_common.interruptible(main))
