"""Does a study fit its 30-minute CPU budget? Times two settings of each of the largest grids
(``mv_dhel``, ``loss_behaviour`` and ``dcl --mnist1d`` on MNIST-1D) for two seeds: seed 0 compiles (cold
cache), seed 1 hits the study's compile cache, as the later seeds of a full run do. Estimate
of a full run = settings x (first seed + 2 x cached seed), mean over the two timed settings.

``python -m experiments.benchmarks.study_budget [study ...]`` (prints JSON; ~2 minutes a study)
"""
import functools
import json
import sys

from experiments import _study, dcl, loss_behaviour, mv_dhel

STUDIES = {  # name: (settings(smoke) of the full grid, the two timed settings or None: first/last)
    "mv_dhel": (mv_dhel.settings, [{"K": 2, "loss": "pwe"}, {"K": 5, "loss": "mv_dhel"}]),
    "loss_behaviour": (loss_behaviour.settings, None),
    "dcl_mnist1d": (functools.partial(dcl.settings, proxy="mnist1d"),
                    [{"batch": 16, "loss": "nt_xent"}, {"batch": 256, "loss": "dclw"}]),
}


def main(names=None):
  out = {}
  for name in names or STUDIES:
    settings, pick = STUDIES[name]
    grid = settings(False)
    chosen = [g for g in grid if pick is None or g[0] in pick]
    if pick is None:
      chosen = chosen[:1] + chosen[-1:]
    rows = _study.run_grid(chosen, (0, 1))
    out[name] = {"grid_settings": len(grid), "rows": [
        {k: r[k] for k in ("setting", "seed", "wall_s", "cpu_s")} for r in rows]}
    cold = [r for r in rows if r["seed"] == 0]
    warm = [r for r in rows if r["seed"] == 1]
    est = len(grid) * (sum(r["wall_s"] for r in cold) / len(cold)
                       + 2 * sum(r["wall_s"] for r in warm) / len(warm))
    out[name]["estimated_full_run_min"] = round(est / 60, 1)
    print(json.dumps(out[name]), flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
