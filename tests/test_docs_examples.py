"""Every Python example in docs/ runs as written and shows what its comments say.

Blocks that are API listings (signatures with ``...``, names the reader supplies) are named in
LISTINGS; every other block is executed, so a new example is tested by default.
"""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path

import pytest
import torch

DOCS = Path(__file__).resolve().parents[1] / "docs"

# (file, index of the block in the file): why it is not run on its own.
LISTINGS = {
    ("architecture.md", 0): "the signature of solve, with `*` and a placeholder func",
    ("architecture.md", 1): "the attributes of a System, one per line",
    ("solvers.md", 0): "the shape of a solve call, with placeholders func, y0, t and `...`",
    ("data.md", 1): "simulate with an executor: a scheduler host and `...` the reader supplies; "
    "tests/test_data_parallel.py runs the same calls",
}


def _blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), re.S)


def _commands(name: str, after: str) -> list[list[str]]:
    """The commands of the first bash block after the text ``after`` (a regular expression) in
    docs page ``name``, each split as a shell would, lines continued with a backslash joined."""
    block = re.search(after + r".*?```bash\n(.*?)```", (DOCS / name).read_text(), re.S).group(1)
    lines = re.split(r"(?<!\\)\n", block.strip())
    return [shlex.split(line.replace("\\\n", " ")) for line in lines]


def _run(name: str, index: int, namespace: dict | None = None, **replace: str) -> dict:
    code = _blocks(name)[index]
    for old, new in replace.items():
        assert old in code, f"{name} block {index} no longer contains {old!r}"
        code = code.replace(old, new)
    namespace = {} if namespace is None else namespace
    exec(compile(code, f"{name} block {index}", "exec"), namespace)
    return namespace


def test_every_block_is_run_by_a_test_or_listed_as_a_listing():
    tested = {("solvers.md", 1), ("solvers.md", 2), ("solvers.md", 3), ("solvers.md", 4),
              ("solvers.md", 5), ("solvers.md", 6), ("solvers.md", 7),
              ("systems.md", 0),
              ("systems.md", 1),
              ("systems.md", 2),  # tests/test_to_spec.py
              ("data.md", 0), ("data.md", 2), ("training.md", 0), ("training.md", 1),
              ("training.md", 2), ("training.md", 3), ("training.md", 4), ("training.md", 5),
              ("training.md", 6), ("training.md", 7), ("training.md", 8), ("training.md", 9),
              ("training.md", 10),
              ("training.md", 11),  # tests/test_train_distributed.py, under torchrun
              ("diagnostics.md", 0),
              ("diagnostics.md", 1),
              ("diagnostics.md", 2),
              ("tutorial.md", 0), ("tutorial.md", 1), ("tutorial.md", 2), ("tutorial.md", 3),
              ("tutorial.md", 4)}  # fmt: skip
    found = {(path.name, i) for path in DOCS.glob("*.md") for i in range(len(_blocks(path.name)))}
    assert found == tested | set(LISTINGS), "a docs example is neither tested nor a listing"


def test_solvers_van_der_pol_example_fails_then_restart_steps_and_aca_are_accurate(capsys):
    ns = _run("solvers.md", 1)
    printed = capsys.readouterr().out
    # The default Opt-Disc's backward solve failed at 1e-4, and its message names the way out.
    assert "Opt-Disc backward solve failed" in printed
    assert "physode.OptDisc(restart='steps')" in printed and "gradient='aca'" in printed
    gradient, exact = ns["gradient"], ns["exact"]
    with pytest.raises(ns["physode"].SolverError):
        gradient("opt-disc", 1e-4)
    errors = {}
    for name, mode in [("default", "opt-disc"), ("steps", ns["physode"].OptDisc(restart="steps")),
                       ("aca", "aca")]:  # fmt: skip
        errors[name] = float((gradient(mode, 1e-5) - exact).norm() / exact.norm())
    # At 1e-5 the default is far off, the restarted one and ACA follow the tolerance.
    assert errors["default"] > 100 * max(errors["steps"], errors["aca"])
    assert errors["steps"] < 1e-3 and errors["aca"] < 1e-3
    # The printed lines are those errors, one per mode.
    lines = printed.strip().splitlines()[-3:]
    assert [line.split()[0] for line in lines] == ["opt-disc", "OptDisc(method=None,", "aca"]
    assert [float(line.split()[-1]) for line in lines] == pytest.approx(
        [float(f"{errors[k]:.1g}") for k in ("default", "steps", "aca")])


def test_solvers_events_example_lands_when_and_with_the_gradient_its_comment_says():
    ns = _run("solvers.md", 4)
    g, h0 = 9.81, 10.0
    assert ns["t_event"].item() == pytest.approx((2 * h0 / g) ** 0.5, rel=1e-9)
    assert ns["ys"][1, 0].item() == pytest.approx(0.0, abs=1e-9)
    assert ns["y0"].grad[0].item() == pytest.approx(1 / (2 * g * h0) ** 0.5, rel=1e-9)


def test_solvers_parameters_in_state_example_keeps_each_rows_parameters():
    ns = _run("solvers.md", 2)
    sol, system, p = ns["sol"], ns["system"], ns["p"]
    assert ns["ys"].shape == (7, 4, 2) and bool((sol.status == 0).all())
    torch.testing.assert_close(sol.ys[-1, :, system.n_state :], p, rtol=0, atol=0)
    # Each row is its own solve at its own parameters: the same as that row alone.
    f, y0, t = ns["f"], ns["y0"], ns["t"]
    for i in range(4):
        alone = ns["physode"].solve(
            f, torch.cat([y0[i : i + 1], p[i : i + 1]], -1), t, step_control="per-sample"
        )
        assert torch.equal(alone.ys[:, 0], sol.ys[:, i])
    assert not torch.allclose(p[0], p[1])


def test_solvers_per_sample_numpy_example():
    ns = _run("solvers.md", 3)
    sol, y0 = ns["sol"], ns["y0"]
    assert sol.ys.shape == (11, 1000, 3) and bool((sol.status == 0).all())
    torch.testing.assert_close(sol.ys[-1], y0 * torch.exp(torch.tensor(-1.0)), rtol=1e-5, atol=0)


def test_solvers_per_row_events_example_lands_each_row_with_its_gradient():
    ns = _run("solvers.md", 5)
    sol, y0, g = ns["sol"], ns["y0"], 9.81
    h0 = y0.detach()[:, 0]
    assert sol.t_event.shape == (3,) and sol.ys.shape == (2, 3, 2)
    torch.testing.assert_close(sol.t_event.detach(), torch.sqrt(2 * h0 / g), rtol=0, atol=1e-12)
    assert float(sol.ys[1, :, 0].detach().abs().max()) < 1e-11
    torch.testing.assert_close(y0.grad[:, 0], 1 / torch.sqrt(2 * g * h0), rtol=0, atol=1e-10)


def test_solvers_output_times_example_gives_t_y0_and_the_rate_their_gradients():
    ns = _run("solvers.md", 7)
    t, y0, rate = ns["t"], ns["y0"], ns["rate"]
    y1 = 2.0 * math.exp(-0.5)
    torch.testing.assert_close(t.grad, torch.tensor([0.5, -0.5], dtype=torch.float64) * y1)
    torch.testing.assert_close(y0.grad, torch.tensor([math.exp(-0.5)], dtype=torch.float64))
    torch.testing.assert_close(rate.grad, torch.tensor(y1, dtype=torch.float64))


def test_solvers_tuple_state_example_gives_exact_log_density_and_its_gradient():
    ns = _run("solvers.md", 6)
    zs, logps, A = ns["zs"], ns["logps"], ns["A"]
    assert zs.shape == (2, 256, 2) and logps.shape == (2, 256, 1)
    trace = float(A.detach().diagonal().sum())
    torch.testing.assert_close(logps[-1], torch.full((256, 1), -trace, dtype=torch.float64))
    torch.testing.assert_close(A.grad, -torch.eye(2, dtype=torch.float64))
    # z(1) = expm(A) z0, solved to the default tolerances
    exact = ns["z0"] @ torch.linalg.matrix_exp(A.detach()).T
    torch.testing.assert_close(zs[-1], exact, rtol=0, atol=1e-5)


def test_systems_lagrangian_example_shows_its_values():
    ns = _run("systems.md", 0)
    pend = ns["pend"]
    assert str(pend.equations) == "{'theta': theta_dot, 'theta_dot': -g*sin(theta)/l}"
    assert pend.state_names == ["theta", "theta_dot"]
    energy = pend.invariants(torch.tensor([0.5, 0.0]))["energy"]
    assert f"{float(energy):.4f}" == "-8.6091"
    assert ns["ys"].shape == (51, 16, 2) and isinstance(ns["f"].g, torch.nn.Parameter)


def test_systems_numpy_twin_example_solves_every_row():
    ns = _run("systems.md", 1)
    sol = ns["sol"]
    assert sol.ys.shape == (101, 256, 12) and bool((sol.status == 0).all())


def test_data_example_writes_reads_checks_and_loads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = _run("data.md", 0)
    data = ns["data"]
    assert (data.t.shape, data.states.shape, data.params.shape) == (
        (101,),
        (1024, 101, 12),
        (1024, 4),
    )
    assert ns["report"].failing == [] and (tmp_path / "drift.png").stat().st_size > 0
    assert len(next(iter(ns["loader"]))) > 0


def test_data_loader_example_trains_on_batches_of_windows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    ns = _run("data.md", 2)
    batch = ns["batch"]
    assert batch["ys"].shape[1:] == (6, 2) and ns["ys"].shape[0] == 6
    assert len({float(start) for start in batch["t"][:, 0]}) > 1  # windows of several starts
    assert 8.3 < ns["model"].physical_parameters()["g"] < 9.81


def test_training_examples_run_with_fewer_epochs(tmp_path, monkeypatch):
    from physode.cli import main

    monkeypatch.chdir(tmp_path)
    made_with = re.search(r"made first with: physode (.*)", _blocks("training.md")[3]).group(1)
    assert main(shlex.split(made_with)) == 0
    ns = _run("training.md", 0)
    # The example's 20 epochs of 5 batches, cut to two epochs of two batches.
    ns = _run(
        "training.md",
        3,
        ns,
        **{"epochs=20,": "epochs=2,", "batches_per_epoch=5,": "batches_per_epoch=2,"},
    )
    result, report = ns["result"], ns["report"]
    assert len(result.history) == 2 and set(result.physical_parameters) == {"g"}
    assert report.mse_beyond is not None and (tmp_path / "ckpt" / "last.pt").is_file()
    assert (tmp_path / "log.csv").is_file()

    from physode.models import Aphynity, Hybrid, NeuralODE, PhysicsModel

    def make_model():
        torch.manual_seed(0)
        return Hybrid(
            PhysicsModel("pendulum", learnable=["g"], init={"g": 8.0}),
            NeuralODE(2, width=32, depth=2, zero_output=True),
            aphynity=Aphynity(lambda_init=1.0, tau=100.0, update="epoch"),
        )

    config = ns["trainer"].config
    # Block 4 continues block 3 (its Trainer import), with the reader's model factory.
    resumed = {
        "Trainer": ns["Trainer"],
        "make_model": make_model,
        "data": "pendulum.h5",
        "config": type(config)(**{**config.to_dict(), "progress": False}),
    }
    # The cut run has done its 2 epochs, which the cosine schedule keeps: nothing to train.
    with pytest.warns(UserWarning, match="nothing to train"):
        _run("training.md", 4, resumed)
    assert resumed["trainer"].epoch == 2 and len(resumed["trainer"].history) == 2


def test_training_autonomous_example_shares_solves_across_window_starts():
    from physode.train import Trainer

    ns = _run("training.md", 1)
    t = torch.linspace(0, 2, 21, dtype=torch.float64)
    ys = torch.exp(-0.8 * t)[None, :, None].repeat(3, 1, 1)
    trainer = Trainer(ns["Decay"](), (t, ys), epochs=1, window=5, batch_size=8)
    assert trainer.model_is_autonomous
    batches = trainer._batches(trainer.train_windows, shuffle=False)
    assert any(len({w.start for w in batch}) > 1 for batch in batches)


def test_hamiltonian_network_example_learns_the_oscillators_energy_as_the_text_says(capsys):
    import math

    ns = _run("training.md", 2)
    loss_ratio, drift = capsys.readouterr().out.split()
    history = ns["result"].history
    assert float(loss_ratio) == float(f"{history[-1]['loss'] / history[0]['loss']:.0e}") < 1e-2
    assert float(drift) < 1e-9  # "about 1e-10": to the solver's tolerance
    # The text's numbers: H's rises between circles of true energy 0.045, 0.18, 0.405, and its
    # spread along each.
    angle = torch.linspace(0, 2 * math.pi, 65, dtype=torch.float64)[:-1]
    with torch.no_grad():
        rings = [ns["model"].hamiltonian(torch.stack([r * angle.cos(), r * angle.sin()], -1))
                 for r in (0.3, 0.6, 0.9)]  # fmt: skip
    rises = [round(float(b.mean() - a.mean()), 3) for a, b in zip(rings, rings[1:])]
    assert rises == [0.146, 0.224]
    assert max(float(h.std()) for h in rings) < 0.01
    # The separable network ran under leapfrog, which only a declared split allows.
    assert ns["separable"].separable and ns["ys_leapfrog"].shape == (31, 8, 2)


def test_per_trajectory_parameters_example_recovers_g_and_not_without_the_stored_lengths(capsys):
    ns = _run("training.md", 5)
    assert ns["model"].physical_parameters()["g"] == pytest.approx(9.81, rel=1e-6)
    assert "{'g': 9.81000" in capsys.readouterr().out
    fixed = _run(
        "training.md", 5,
        **{'init={"g": 6.0})': 'init={"g": 6.0}, stored_parameters=False)'},
    )  # fmt: skip
    assert round(fixed["model"].physical_parameters()["g"], 2) == 9.16  # as the text says


def test_parameters_learned_per_trajectory_example_recovers_each_length(capsys):
    ns = _run("training.md", 6)
    lengths = [0.5, 0.8, 1.2, 1.6]
    assert ns["result"].per_trajectory_parameters["l"] == pytest.approx(lengths, rel=1e-6)
    out = capsys.readouterr().out.splitlines()
    assert out == [str(lengths), str(lengths)]  # learned, then the stored values
    # Calibrating held-out trajectories continues the example, with its trainer.
    ns = _run("training.md", 7, ns)
    assert capsys.readouterr().out.splitlines() == ["[0.6, 1.4]", "1.0 True"]
    assert ns["report"].calibration["converged"]


def test_training_on_numpy_arrays_example_learns_k_and_rolls_out_past_the_data(capsys):
    ns = _run("training.md", 8)
    assert ns["result"].physical_parameters["k"] == pytest.approx(1.0, rel=1e-5)
    report = ns["report"]
    assert report.note is None and report.mse_beyond < 1e-10 and float(report.t[-1]) == 10.0
    assert ns["trainer"].train_data.states.dtype == torch.float64


def test_missing_observations_example_merges_the_series_and_recovers_k(capsys):
    ns = _run("training.md", 9)
    assert capsys.readouterr().out.splitlines()[0] == "33 False"  # as its comment says
    data = ns["data"]
    assert int(data.observed.sum()) == 2 * (25 + 9 + 7) - 2  # two momenta missing
    assert ns["model"].physical_parameters()["k"] == pytest.approx(1.0, rel=1e-5)
    errors = ns["report"].mse_per_trajectory
    assert len(errors) == 3 and max(errors) < 1e-10


def test_diagnostics_rollout_example_drifts_as_its_comments_say():
    ns = _run("diagnostics.md", 0)
    assert ns["p"].tolist() == [1.0, 9.0, 1.0]
    report = ns["report"]
    assert report.ok and 1e-12 < float(report["energy"].max_rel_drift.max()) < 1e-10
    system, t, p, y0 = ns["system"], ns["t"], ns["p"], ns["y0"]
    with torch.no_grad():
        ys = ns["physode"].odeint(ns["model"], y0, t, rtol=1e-6, atol=1e-8)
    conservation = ns["physode"].diagnostics.conservation
    loose = conservation(system, ys, t, p=p)["energy"]
    assert not loose.exceeds.all() and len(loose.failing) == 9
    assert 6e-6 < float(loose.max_rel_drift.max()) < 7e-6
    assert conservation(system, ys, t, tolerance=1e-4, p=p).ok
    # Without p, the default g = 9.81 makes the g = 9.0 model's energy drift by percents.
    assert float(conservation(system, ys, t)["energy"].max_rel_drift.max()) > 1e-2


def test_diagnostics_data_set_example_checks_each_invariant_at_its_tolerance(tmp_path, monkeypatch):
    from physode.cli import main

    monkeypatch.chdir(tmp_path)
    made_with = re.search(r"Made first with: physode (.*)", _blocks("diagnostics.md")[1]).group(1)
    assert main(shlex.split(made_with)) == 0
    ns = _run("diagnostics.md", 1)
    report = ns["report"]
    assert report.ok and report.failures == [] and report.batch_shape == (16,)
    assert report["momentum_x"].tolerance == float("inf")
    assert report["momentum_y"].tolerance == 1e-6 and report["energy"].tolerance == 1e-8
    assert float(report["energy"].max_rel_drift.max()) < 2e-9
    assert (tmp_path / "drift.png").stat().st_size > 0


def test_diagnostics_section_example_prints_what_its_comments_say(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ns = _run("diagnostics.md", 2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "theta1 = 0, upward [4, 5, 3]"
    assert 1e-7 < float(lines[1]) < 1e-5  # about 1e-6
    assert lines[2] == "656" and ns["strobe"].counts.tolist() == [41] * 16
    assert ns["section"].plot_axes == ("theta2", "theta2_dot")
    assert (tmp_path / "section.png").stat().st_size > 0
    assert (tmp_path / "duffing.png").stat().st_size > 0


@pytest.mark.parametrize("listing", sorted(LISTINGS))
def test_listings_name_only_public_attributes(listing):
    """The names a listing shows exist: attributes of a System, solve's keywords."""
    import inspect

    import physode

    code = _blocks(listing[0])[listing[1]]
    if "system." in code:
        system = physode.systems.load("three_body")
        for name in re.findall(r"^system\.(\w+)", code, re.M):
            assert hasattr(system, name), name
    if "physode.solve(" in code:
        keywords = set(inspect.signature(physode.solve).parameters)
        shown = set(re.findall(r"(\w+)=", code.split("sol.ys")[0]))
        assert shown <= keywords, shown - keywords


def test_training_divergence_example_stops_with_finite_weights_in_its_checkpoint(
    tmp_path, capsys
):
    ns = _run("training.md", 10, **{'"ckpt"': repr(str(tmp_path))})
    trainer = ns["trainer"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("training stopped in epoch 4, batch 2 of 2: the solve of its")
    assert lines[1] == str(tmp_path / "last.pt") and trainer.epoch == 3
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["epoch"] == 3 and torch.equal(saved["model"]["k"], trainer.model.k.detach())
    assert 0.5 < trainer.model.k.item() < 1


def test_training_physics_first_commands_run_and_the_hybrid_improves_on_the_fit(
    tmp_path, monkeypatch, capsys
):
    import json

    from physode.cli import main

    monkeypatch.chdir(tmp_path)
    commands = _commands("training.md", "with a physics that is only part of the truth")
    assert [c[:2] for c in commands] == [["physode", "simulate"], ["physode", "train"],
                                         ["physode", "train"]]  # fmt: skip
    fewer = {"20": "6", "40": "12"}  # epochs, cut for the test
    for command in commands:
        args = command[1:]
        if "--epochs" in args:
            i = args.index("--epochs") + 1
            args[i] = fewer[args[i]]
        assert main(args) == 0
    err = capsys.readouterr().err
    assert "started the physics part (m, k) from fit/model.pt; the residual starts fresh" in err
    fit = json.loads((tmp_path / "fit" / "report.json").read_text())
    hybrid = json.loads((tmp_path / "hybrid" / "report.json").read_text())
    assert hybrid["warm_start"].startswith("started the physics part")
    # The residual learns the friction the undamped physics lacks.
    assert hybrid["final_loss"] < fit["final_loss"] / 10
    assert hybrid["rollout"]["mse_beyond"] is not None
    # Without --system the hybrid's physics is the data's, which the fit does not start.
    without = commands[2][1:]
    i = without.index("--system")
    del without[i : i + 2]
    without[without.index("--learnable") + 1] = "c"
    assert main(without) == 2
    assert "'harmonic_oscillator' -> 'damped_oscillator'" in capsys.readouterr().err


TUTORIAL_FOLDER = 'tempfile.mkdtemp(prefix="physode-tutorial-")'


def _tutorial(tmp_path, blocks, namespace=None):
    """Run tutorial.md's blocks in one namespace, as a reader pasting them in order does, with
    the temporary folder of its step 2 replaced by ``tmp_path``."""
    namespace = {} if namespace is None else namespace
    for index in blocks:
        replace = {TUTORIAL_FOLDER: repr(str(tmp_path))} if TUTORIAL_FOLDER in (
            _blocks("tutorial.md")[index]) else {}  # fmt: skip
        _run("tutorial.md", index, namespace, **replace)
    return namespace


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    """The whole tutorial (steps 1 to 3) run once, as a reader pasting its blocks in order does:
    ``(folder, namespace, printed lines)``; step 4's commands run on a copy of its folder."""
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("tutorial")
    printed = io.StringIO()
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(printed):
        torch.manual_seed(0)
        ns = _tutorial(folder, range(5))
    return folder, ns, printed.getvalue().splitlines()


def test_tutorial_runs_end_to_end_and_prints_what_its_comments_say(tutorial):
    tmp_path, ns, out = tutorial
    # Step 1: the system from SymPy, its states, the Coriolis term, its energy (T + V).
    assert out[:4] == [
        "['r', 'theta', 'r_dot', 'theta_dot']",
        "-g*sin(theta)/r - 2*r_dot*theta_dot/r",
        "['energy']",
        "-9.7309",
    ]
    r, theta = 1.2, 0.5
    assert float(ns["spring"].energy(ns["y"])) == pytest.approx(
        30.0 * (r - 1.0) ** 2 / 2 - 9.81 * r * float(torch.cos(torch.tensor(theta))))
    # Step 2: the file is the same system; the data set, its split and its conservation.
    assert out[4] == "True"
    assert out[5].startswith(f"wrote {tmp_path / 'spring.h5'}: 32 trajectories in ")
    assert "(0 solver failures, 0 invariant drift flags)" in out[5]
    assert out[6:8] == ["(32, 51, 4) 5.0", "True"]
    assert [len(ns["data"].split[s]) for s in ("train", "val", "test")] == [26, 3, 3]
    drift = float(ns["report"]["energy"].max_rel_drift.max())
    assert 1e-12 < drift < 1e-10  # "about 1e-11"
    section_line = next(i for i, line in enumerate(out) if line.startswith("theta = 0"))
    # The optional Poincare section.
    assert out[section_line] == "theta = 0, upward [23, 23, 26, 24]"
    assert ns["section"].plot_axes == ("r", "r_dot")
    assert (tmp_path / "section.png").stat().st_size > 0
    # Step 3: the physics model recovers k; its rollout beyond the horizon is right.
    assert out[section_line + 1 :] == ["k = 30.0000", "9e-12", "0.4", "0.0002", "-0.27"]
    assert ns["fit"].physical_parameters["k"] == pytest.approx(30.0, rel=1e-6)
    assert float(ns["rollout"].t[-1]) == 10.0 and ns["rollout"].mse_beyond < 1e-10
    # The hybrid: two thousand times smaller than the undamped physics beyond the horizon.
    before, after = ns["before"].mse_beyond, ns["after"].mse_beyond
    assert before / after > 1000
    assert float(ns["after"].t[-1]) == 10.0 and ns["after"].note is None
    # The damped data set's system has the damper the physics lacks.
    damped = ns["physode"].data.load(tmp_path / "damped.h5").system
    assert damped.parameters["c"] == 0.3 and "energy" not in damped.invariant_names


def test_tutorial_commands_run_on_the_files_of_its_step_two(tutorial, tmp_path, monkeypatch,
                                                           capsys):  # fmt: skip
    import json
    import shutil

    from physode.cli import main

    # The folder the tutorial's steps 1 to 3 filled, as the reader of step 4 has it (a copy:
    # the commands overwrite its data sets).
    shutil.copytree(tutorial[0], tmp_path, dirs_exist_ok=True)
    assert (tmp_path / "spring_damped.toml").is_file()
    monkeypatch.chdir(tmp_path)
    commands = _commands("tutorial.md", r"## 4\. The same from the command line")
    assert [c[:2] for c in commands] == [["physode", "simulate"], ["physode", "check"],
                                         ["physode", "train"], ["physode", "simulate"],
                                         ["physode", "train"]]  # fmt: skip
    fewer = {"6": "3", "20": "2"}  # epochs, cut for the test
    capsys.readouterr()
    for command in commands:
        args = command[1:]
        if "--epochs" in args:
            i = args.index("--epochs") + 1
            args[i] = fewer[args[i]]
        assert main(args) == 0, args
    captured = capsys.readouterr()
    assert "all invariants within tolerance 1e-06" in captured.out
    assert "started the physics part (m, k, l0, g) from fit/model.pt; the residual starts fresh" \
        in captured.err  # fmt: skip
    fit = json.loads((tmp_path / "fit" / "report.json").read_text())
    assert fit["physical_parameters"]["k"] == pytest.approx(30.0, rel=1e-3)
    hybrid = json.loads((tmp_path / "hybrid" / "report.json").read_text())
    assert hybrid["rollout"]["mse_beyond"] is not None
    # A fit on the data set's own system starts the hybrid whose --system is the file: the
    # systems are compared by name and specification, not as written.
    fit_args = commands[2][1:]
    i = fit_args.index("--system")
    del fit_args[i : i + 2]
    fit_args[fit_args.index("--epochs") + 1] = "1"
    fit_args[fit_args.index("--out") + 1] = "own"
    assert main(fit_args) == 0
    hybrid_args = commands[4][1:]
    hybrid_args[hybrid_args.index("--init-from") + 1] = "own/model.pt"
    hybrid_args[hybrid_args.index("--epochs") + 1] = "1"
    hybrid_args[hybrid_args.index("--out") + 1] = "own_hybrid"
    assert main(hybrid_args) == 0
    own = json.loads((tmp_path / "own_hybrid" / "report.json").read_text())
    assert own["warm_start"].startswith("started the physics part (")


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but hyphens dropped, spaces
    to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_tutorial_links_point_to_existing_pages_and_headings():
    text = (DOCS / "tutorial.md").read_text()
    links = re.findall(r"\]\(([\w.]+\.md)(?:#([^)]+))?\)", text)
    assert {page for page, _ in links} >= {"systems.md", "data.md", "diagnostics.md",
                                           "solvers.md", "training.md", "cli.md",
                                           "architecture.md"}  # fmt: skip
    for page, anchor in links:
        assert (DOCS / page).is_file(), page
        if anchor:
            headings = re.findall(r"^#+ (.*)$", (DOCS / page).read_text(), re.M)
            assert anchor in {_anchor(h) for h in headings}, f"{page}#{anchor}"
    readme = (DOCS.parent / "README.md").read_text()
    assert "(docs/tutorial.md)" in readme
    assert "(tutorial.md)" in (DOCS / "architecture.md").read_text()


@pytest.mark.parametrize(
    "command, page",
    [("simulate", "cli.md"), ("check", "cli.md"), ("train", "training.md")],
)
def test_each_commands_synopsis_names_exactly_the_options_its_parser_takes(command, page):
    # The synopsis under "## `physode COMMAND`" is where a reader looks an option up: an option
    # added to the parser and not there, or one there that the parser no longer takes, is stale.
    import argparse

    from physode.cli import build_parser

    text = (DOCS / page).read_text()
    synopsis = re.search(rf"## `physode {command}`\n+```\n(.*?)```", text, re.S).group(1)
    synopsis = re.sub(r"--\[no-\]([a-z-]+)", r"--\1 --no-\1", synopsis)
    actions = build_parser()._actions
    (subparsers,) = [a for a in actions if isinstance(a, argparse._SubParsersAction)]
    options = {
        name
        for action in subparsers.choices[command]._actions
        for name in action.option_strings
        if name.startswith("--") and name != "--help"
    }
    named = set(re.findall(r"--[a-z][a-z0-9-]*", synopsis))
    assert options - named == set(), f"{page}: the synopsis of physode {command} lacks these"
    assert named - options == set(), f"{page}: physode {command} takes none of these"
