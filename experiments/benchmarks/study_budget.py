"""Does a study fit its 30-minute CPU budget? Times two settings of each of the two largest
grids (``mv_dhel`` and ``loss_behaviour`` on MNIST-1D) for two seeds: seed 0 compiles (cold
cache), seed 1 hits the study's compile cache, as the later seeds of a full run do. Estimate
of a full run = settings x (first seed + 2 x cached seed), mean over the two timed settings.

``python -m experiments.benchmarks.study_budget`` (prints JSON; ~4 minutes)
"""
import json

from experiments import _study, loss_behaviour, mv_dhel


def main():
  out = {}
  for mod, pick in ((mv_dhel, [{"K": 2, "loss": "pwe"}, {"K": 5, "loss": "mv_dhel"}]),
                    (loss_behaviour, None)):
    grid = mod.settings(False)
    chosen = [g for g in grid if pick is None or g[0] in pick]
    if pick is None:
      chosen = chosen[:1] + chosen[-1:]
    rows = _study.run_grid(chosen, (0, 1))
    out[mod.__name__] = {"grid_settings": len(grid), "rows": [
        {k: r[k] for k in ("setting", "seed", "wall_s", "cpu_s")} for r in rows]}
    print(json.dumps(out[mod.__name__]), flush=True)
    cold = [r for r in rows if r["seed"] == 0]
    warm = [r for r in rows if r["seed"] == 1]
    est = len(grid) * (sum(r["wall_s"] for r in cold) / len(cold)
                       + 2 * sum(r["wall_s"] for r in warm) / len(warm))
    out[mod.__name__]["estimated_full_run_min"] = round(est / 60, 1)
    print(json.dumps(out[mod.__name__]), flush=True)


if __name__ == "__main__":
  main()
