"""Benchmark: the generated three-body right-hand side against hand-written batched torch code.

Prints the best per-call times (forward, and forward + backward to the state and the masses) at a
batch of 4096 states, for the rhs generated from ``systems/three_body.toml`` and two hand-written
versions: one vectorised over body pairs, one written out per component like a person would for
three bodies. The last row is the ratio generated / best hand-written; the issue asks for <= 1.2.
With ``--out DIR`` the times (in microseconds) and ratios also go to ``DIR/results.json``.

Usage: ``python scripts/bench_codegen.py [--batch 4096] [--repeats 50] [--dtype float64]
[--seed 0] [--threads 1] [--out DIR] [--quick]`` (the defaults; ``--quick``: batch 64, 1 round).
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

import physode.systems  # noqa: E402


def hand_pairwise(t: torch.Tensor, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Planar three-body rhs vectorised over all ordered pairs of bodies."""
    q = y[..., :6].unflatten(-1, (3, 2))
    v = y[..., 6:]
    masses, big_g = p[..., :3], p[..., 3]
    d = q.unsqueeze(-3) - q.unsqueeze(-2)  # d[..., i, j] = q_j - q_i
    eye = torch.eye(3, dtype=y.dtype, device=y.device)
    r2 = (d * d).sum(-1) + eye  # 1 on the diagonal
    w = big_g * masses.unsqueeze(-2) * r2.pow(-1.5) * (1 - eye)
    acc = (w.unsqueeze(-1) * d).sum(-2)
    return torch.cat((v, acc.flatten(-2)), dim=-1)


def hand_components(t: torch.Tensor, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Planar three-body rhs written out per pair and component."""
    x1, y1, x2, y2, x3, y3, vx1, vy1, vx2, vy2, vx3, vy3 = y.unbind(-1)
    m1, m2, m3, big_g = p.unbind(-1)
    dx12, dy12 = x2 - x1, y2 - y1
    dx13, dy13 = x3 - x1, y3 - y1
    dx23, dy23 = x3 - x2, y3 - y2
    s12 = big_g * (dx12 * dx12 + dy12 * dy12).pow(-1.5)
    s13 = big_g * (dx13 * dx13 + dy13 * dy13).pow(-1.5)
    s23 = big_g * (dx23 * dx23 + dy23 * dy23).pow(-1.5)
    ax1 = m2 * s12 * dx12 + m3 * s13 * dx13
    ay1 = m2 * s12 * dy12 + m3 * s13 * dy13
    ax2 = m3 * s23 * dx23 - m1 * s12 * dx12
    ay2 = m3 * s23 * dy23 - m1 * s12 * dy12
    ax3 = -m1 * s13 * dx13 - m2 * s23 * dx23
    ay3 = -m1 * s13 * dy13 - m2 * s23 * dy23
    return torch.stack((vx1, vy1, vx2, vy2, vx3, vy3, ax1, ay1, ax2, ay2, ax3, ay3), dim=-1)


def interleaved_times(fns: dict, rounds: int, calls: int = 10) -> dict[str, float]:
    """Best per-call time of each function, timing them in turn so that load hits all alike.

    The minimum over rounds estimates the cost without interference from other processes on a
    shared machine; each round times ``calls`` consecutive calls.
    """
    for fn in fns.values():
        for _ in range(5):
            fn()
    best = dict.fromkeys(fns, float("inf"))
    names = list(fns)
    for r in range(rounds):
        # Rotate the order each round so that no candidate always runs right after another.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(_common.summary(__doc__), None, quick="batch 64 and 1 round",
                            seed="the sampled states")  # fmt: skip
    parser.add_argument("--batch", type=_common.positive_int, metavar="B",
                        help="states per call (default 4096, 64 with --quick)")  # fmt: skip
    parser.add_argument("--repeats", type=_common.positive_int, metavar="R",
                        help="rounds of 10 calls (default 50, 1 with --quick)")  # fmt: skip
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64",
                        help="(default float64)")  # fmt: skip
    args = parser.parse_args(argv)
    args.batch = args.batch or (64 if args.quick else 4096)
    args.repeats = args.repeats or (1 if args.quick else 50)
    _common.setup(args)
    dtype = getattr(torch, args.dtype)

    system = physode.systems.load("three_body")
    y = system.sample_initial_states(args.batch, seed=args.seed).to(dtype)
    p0 = system.default_parameters().to(dtype)
    t = torch.zeros((), dtype=dtype)
    candidates = {
        "generated": system.rhs,
        "hand-written, per component": hand_components,
        "hand-written, pairwise": hand_pairwise,
    }
    reference = system.rhs(t, y, p0)
    for name, fn in candidates.items():
        err = (fn(t, y, p0) - reference).abs().max().item()
        if err > 1e3 * torch.finfo(dtype).eps * reference.abs().max().item():
            raise SystemExit(f"{name} disagrees with the generated rhs by {err:.3g}")

    def forward(fn):
        def run():
            with torch.no_grad():
                fn(t, y, p0)
        return run

    def backward(fn):
        def run():
            ys = y.detach().requires_grad_(True)
            ps = p0.detach().requires_grad_(True)
            fn(t, ys, ps).square().sum().backward()
        return run

    fwd = interleaved_times({k: forward(fn) for k, fn in candidates.items()}, args.repeats)
    bwd = interleaved_times({k: backward(fn) for k, fn in candidates.items()}, args.repeats)
    best_fwd = min(v for k, v in fwd.items() if k != "generated")
    best_bwd = min(v for k, v in bwd.items() if k != "generated")
    print(f"three-body rhs, batch {args.batch}, {args.dtype}, {torch.get_num_threads()} threads, "
          f"best of {args.repeats} rounds of 10 calls, interleaved")
    print(f"{'implementation':<30} {'forward (us)':>13} {'fwd+bwd (us)':>13}")
    for name in candidates:
        print(f"{name:<30} {fwd[name] * 1e6:>13.1f} {bwd[name] * 1e6:>13.1f}")
    label = "ratio generated / best hand"
    print(f"{label:<30} {fwd['generated'] / best_fwd:>13.2f} {bwd['generated'] / best_bwd:>13.2f}")
    results = {
        "batch": args.batch, "dtype": args.dtype, "threads": torch.get_num_threads(),
        "repeats": args.repeats, "seed": args.seed,
        "forward_us": {name: fwd[name] * 1e6 for name in candidates},
        "forward_backward_us": {name: bwd[name] * 1e6 for name in candidates},
        "ratio": {"forward": fwd["generated"] / best_fwd,
                  "forward_backward": bwd["generated"] / best_bwd},
    }  # fmt: skip
    _common.finish(args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(_common.interruptible(main))
