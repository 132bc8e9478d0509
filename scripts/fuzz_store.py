"""Robustness check of the HDF5 data-set format: flip random bits and read everything back.

Simulates a small data set (64 pendulum trajectories, noisy, 21 points), then, for each of
``--flips`` trials, copies it, flips one random bit of the copy and, in a child process with a
time limit, opens it with :func:`physode.data.load` and reads every attribute and dataset. Each
trial ends one of five ways:

- ``refused``: physode raised :class:`physode.DataFormatError` (a checksum or a consistency
  check caught the damage);
- ``unchanged``: everything read back equal to the undamaged file (the bit was unused space);
- ``altered``: everything read without error, but something differs: damage passed as data;
- ``other error``: an exception other than ``DataFormatError`` (an unclear message);
- ``hang`` / ``crash``: the reader ran past ``--timeout`` seconds or died of a signal.

Only the first two are acceptable. The table prints the counts and the bit offsets of the
others, so a failure can be reproduced with the same ``--seed``. Not a test: it runs for
minutes (about 30 ms a trial on two cores).

Usage::

    python scripts/fuzz_store.py                     # 1000 flips
    python scripts/fuzz_store.py --flips 3000 --seed 5
    python scripts/fuzz_store.py --quick             # 25 flips, a smoke test
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

if __name__ == "__main__":  # not when a test imports the script
    _common.quiet_interrupts_from_the_start()  # Ctrl-C while importing: one line too

import numpy as np  # noqa: E402

import physode  # noqa: E402
from physode.data import load, simulate  # noqa: E402

OUTCOMES = ("refused", "unchanged", "altered", "other error", "hang", "crash")
_EXIT_CODES = {0: "read", 3: "refused", 4: "other error"}


def digest(path: Path) -> str:
    """A hash of everything a user can read from the data set at ``path``."""
    h = hashlib.sha256()
    with load(path) as data:
        for key in sorted(data.attrs):
            h.update(repr((key, data.attrs[key])).encode())
        small = [data.t, data.params, data.flags, data.status, data.n_steps, data.n_rejected]
        small += [data.nfe, *(data.split[name] for name in sorted(data.split))]
        small += [data.t_final, *(data.drift[name] for name in sorted(data.drift))]
        large = [data.states, data.derivatives, data.noisy_states]
        large += [data.invariants[name] for name in sorted(data.invariants)]
        for array in small + [a[()] for a in large if a is not None]:
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def _read_in_child(path: Path, timeout: float) -> tuple[str, str | None]:
    """Read ``path`` in a forked child; return how it ended and, if it read, its digest."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        code = 0
        try:
            os.write(write_end, digest(path).encode())
        except physode.DataFormatError:
            code = 3
        except BaseException:  # noqa: BLE001 - every other failure is what we count
            code = 4
        os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_end)
            return "hang", None
        time.sleep(0.002)
    text = os.read(read_end, 128).decode()
    os.close(read_end)
    if os.WIFSIGNALED(status):
        return "crash", None
    return _EXIT_CODES.get(os.WEXITSTATUS(status), "other error"), text or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_quick(parser, "25 flips")
    _common.add_seed(parser, "the bit positions")
    _common.add_threads(parser)
    parser.add_argument("--flips", type=_common.positive_int, metavar="N",
                        help="trials (default 1000; 25 with --quick)")  # fmt: skip
    parser.add_argument("--timeout", type=_common.positive_float, default=8.0, metavar="SECONDS",
                        help="time limit of each read, in seconds (default 8)")  # fmt: skip
    args = parser.parse_args(argv)
    args.flips = args.flips or (25 if args.quick else 1000)

    with tempfile.TemporaryDirectory() as folder:
        original = Path(folder) / "pendulum.h5"
        simulate("pendulum", trajectories=64, t_end=2.0, points=21, out=original,
                 noise=0.01, quiet=True, threads=args.threads)  # fmt: skip
        clean = digest(original)
        data = original.read_bytes()
        damaged = Path(folder) / "damaged.h5"
        rng = random.Random(args.seed)
        counts: Counter[str] = Counter()
        bad: dict[str, list[int]] = {}
        for _ in range(args.flips):
            bit = rng.randrange(8 * len(data))
            copy = bytearray(data)
            copy[bit // 8] ^= 1 << (bit % 8)
            damaged.write_bytes(bytes(copy))
            outcome, result = _read_in_child(damaged, args.timeout)
            if outcome == "read":
                outcome = "unchanged" if result == clean else "altered"
            counts[outcome] += 1
            if outcome not in ("refused", "unchanged"):
                bad.setdefault(outcome, []).append(bit)

    print(f"{args.flips} single-bit flips of a {len(data)}-byte data set (seed {args.seed})")
    print(f"{'outcome':<12} {'trials':>7} {'share':>7}")
    for outcome in OUTCOMES:
        print(f"{outcome:<12} {counts[outcome]:>7} {counts[outcome] / args.flips:>7.1%}")
    for outcome, bits in bad.items():
        print(f"{outcome}: bit offsets {bits[:20]}{' ...' if len(bits) > 20 else ''}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(_common.interruptible(main))
