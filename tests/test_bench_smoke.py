"""The benchmarks run end to end in small settings and print their tables and verdicts."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_solvers.py"


def _main(name: str, argv: list[str], capsys) -> str:
    """Run ``scripts/<name>.py`` ARGV in this process (a subprocess would pay another import of
    torch): what it printed; it must return 0. The thread count it sets is put back."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    threads = torch.get_num_threads()
    capsys.readouterr()
    try:
        assert module.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out


@pytest.mark.slow
def test_quick_benchmark_prints_every_table_with_a_verdict(tmp_path, capsys):
    pytest.importorskip("torchdiffeq")
    pytest.importorskip("TorchDiffEqPack")
    out = tmp_path / "bench" / "results.json"
    text = _main("bench_solvers", ["--quick", "--out", str(out.parent)], capsys)
    for title in (
        "1. Forward solve",
        "2a. Gradients: MLP",
        "2b. Gradients: hybrid",
        "2c. Gradients: Van der Pol",
        "3. Memory as the steps grow tenfold",
        "4. Symplectic methods",
    ):
        assert title in text
    for row in (
        "Van der Pol",
        "MLP 2-64-64-2",
        "physode forward, no graph",
        "physode disc-opt",
        "physode aca",
        "physode opt-disc",
        "torchdiffeq odeint_adjoint",
        "TorchDiffEqPack aca",
    ):
        assert row in text
    assert "PASS" in text or "FAIL" in text
    assert "targets:" in text

    results = json.loads(out.read_text())
    assert len(results["forward"]) == 3
    # problems x tolerances x configurations, and 2c's Opt-Disc restarted at every step
    assert len(results["gradients"]) == 3 * 3 * 7 + 3
    steps = [r for r in results["gradients"] if r["config"] == "physode opt-disc (steps)"]
    assert [r["problem"] for r in steps] == ["vdp"] * 3
    assert all("odeint_adjoint" in r["target"] for r in steps if "failed" not in r)
    modes = [r["mode"] for r in results["memory"]]
    assert modes == ["disc-opt", "aca", "opt-disc", "opt-disc steps"]
    # Opt-Disc restarted at every step keeps a state per step: more than the classic one.
    opt_disc, steps_memory = results["memory"][2], results["memory"][3]
    assert steps_memory["saved_bytes"][1] > opt_disc["saved_bytes"][1]
    aca = [r for r in results["gradients"] if r["config"] == "physode aca"]
    # Measured numbers, not placeholders: ACA equals Disc-Opt and counts its backward evaluations.
    assert len(aca) == 9
    assert all(r["error_vs_disc_opt"] <= 1e-10 and r["nfe_bwd"] > 0 for r in aca)
    # ACA is compared with what its evaluations alone cost, timed in the same rounds.
    assert all(0 < r["evaluations_vs_adjoint"] for r in aca)
    assert all(r["evaluations_seconds"] > 0 for r in aca)
    disc, aca_memory = results["memory"][0], results["memory"][1]
    assert disc["saved_growth"] > 5 > 1.2 > aca_memory["saved_growth"]
    per_step = {(r["method"], r["drift"]): r["nfe_per_step"] for r in results["symplectic"]}
    assert per_step == {("leapfrog", "by v"): 1, ("leapfrog", "evaluated"): 2,
                        ("yoshida4", "by v"): 3, ("yoshida4", "evaluated"): 6}  # fmt: skip


@pytest.mark.slow
def test_the_simulation_benchmark_runs_every_contender_and_states_its_verdict(tmp_path, capsys):
    pytest.importorskip("rebound")
    out = tmp_path / "bench" / "results.json"
    # Each contender still runs in a process of its own, which the script starts.
    text = _main("bench_simulate", ["--quick", "--out", str(out.parent)], capsys)
    assert "N = 4" in text and "| scipy DOP853 | 2 of 4 |" in text
    assert "physode simulate per trajectory:" in text
    (rows,) = json.loads(out.read_text()).values()
    contenders = ("physode simulate", "physode solve", "scipy DOP853", "rebound IAS15")
    for name in contenders:
        row = next(r for key, r in rows.items() if key.startswith(name))
        # The same trajectories, solved: none failed, energy kept to the tolerance's order.
        assert row["failed"] == 0 and row["seconds"] > 0 and row["worst_error"] < 1e-7
