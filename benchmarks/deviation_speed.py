"""Time conditional_stats (and friends) on 1e6 weights x 50 bins; prints one line per measure."""
import argparse
import time

import numpy as np

from wdev_utils.deviation import conditional_stats, global_measures, joint_histogram, linear_law


def best_of(fn, repeat):
    """Fastest of `repeat` calls, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1_000_000, help="number of weights")
    p.add_argument("--bins", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    side = int(np.sqrt(a.n))
    wi = rng.uniform(-0.05, 0.05, (side, a.n // side)).astype(np.float32)
    wf = wi + 0.1 * wi + rng.normal(0, 0.005, wi.shape).astype(np.float32)
    n = wi.size
    print(f"conditional_stats  {n:.0e} weights x {a.bins} bins: "
          f"{best_of(lambda: conditional_stats(wi, wf, bins=a.bins), a.repeat):.3f} s")
    print(f"  quantile binning {n:.0e} weights x {a.bins} bins: "
          f"{best_of(lambda: conditional_stats(wi, wf, bins=a.bins, binning='quantile'), a.repeat):.3f} s")
    print(f"joint_histogram    {n:.0e} weights, 100 x 100: "
          f"{best_of(lambda: joint_histogram(wi, wf, bins=100), a.repeat):.3f} s")
    print(f"global_measures    {n:.0e} weights: "
          f"{best_of(lambda: global_measures({'fc2.weight': wi}, {'fc2.weight': wf}), a.repeat):.3f} s")
    print(f"linear_law         {n:.0e} weights, 1000 bootstrap replicates: "
          f"{best_of(lambda: linear_law(wi, wf, n_boot=1000), a.repeat):.3f} s")


if __name__ == "__main__":
    main()
