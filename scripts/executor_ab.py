"""CPU time of the reference executor against the eval-mode fast executor, dense and routed.

    python scripts/executor_ab.py [--images 30] [--repeats 3]

Uses one torch thread and `time.thread_time`, the CPU time of this thread alone, so the comparison
holds even while other processes load the machine (wall-clock figures come from `bench`).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drnet_core.checkpoint import load_checkpoint  # noqa: E402
from drnet_core.runtime import configure_cpu_memory  # noqa: E402
from drnet_core.data import load_test_set, to_model_input  # noqa: E402


def cpu_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return 1e3 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--images", type=int, default=30, help="images timed one at a time")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    configure_cpu_memory()  # as the CLI and the app do
    torch.set_num_threads(1)
    model, meta = load_checkpoint(args.checkpoint)
    tau, threshold = meta["default_tau"], meta["default_threshold"]
    batch = to_model_input(load_test_set().images[:256])
    singles = [batch[i:i + 1] for i in range(args.images)]
    print(f"tau {tau:g}; CPU ms per forward, one thread")
    print(f"{'executor':>10} {'threshold':>9} {'batch 1':>9} {'batch 256':>10}")
    with torch.inference_mode():
        for reference in (True, False):
            for cell in model.cells:
                cell.reference_executor = reference
            for at in (0.0, threshold):
                one = cpu_ms(lambda: [model(x, tau=tau, threshold=at) for x in singles], args.repeats) / len(singles)
                many = cpu_ms(lambda: model(batch, tau=tau, threshold=at), args.repeats)
                print(f"{'reference' if reference else 'fast':>10} {at:>9g} {one:>9.3f} {many:>10.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
