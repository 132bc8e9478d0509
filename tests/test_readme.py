"""The README's example runs as written, and its two commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_readme_example_runs_and_gives_an_exact_gradient_to_g():
    code = re.findall(r"```python\n(.*?)```", README, re.S)[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    f, sol = namespace["f"], namespace["sol"]
    assert sol.success and sol.stats.nfe_backward > 0
    grad = f.g.grad.clone()
    # The same loss under Disc-Opt gives the same gradient to rounding (ACA is exact).
    f.g.grad = None
    import physode

    ys = physode.odeint(
        f, namespace["y0"], namespace["t"], rtol=1e-8, atol=1e-10, gradient="disc-opt"
    )
    ys[..., 0].square().mean().backward()
    torch.testing.assert_close(f.g.grad, grad, rtol=1e-10, atol=0)
    assert "energy" in str(namespace["report"])


def test_the_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    commands = re.findall(r"```bash\n(.*?)```", README, re.S)[0].strip().splitlines()
    assert len(commands) == 2
    assert "scripts/demo.py" in commands[0] and "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    install, test = commands[1].split(" && ")
    assert install.replace("pip install", "python -m pip install --quiet") in ci
    assert test in ci
