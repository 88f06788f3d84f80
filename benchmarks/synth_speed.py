"""How fast is the synthetic market generated?

Times ``generate`` on a market (default: the default 300 stocks × 6 years) and,
as the reference measured in the same run, drawing its random shocks alone
(the irreducible part: every other step is arithmetic on those arrays). Also
times the realised statistics and writing the market to disk. Prints JSON.
Usage: ``python benchmarks/synth_speed.py [--stocks N] [--years Y] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from conceptalpha.data.synthetic import (
    SynthConfig,
    draw_shocks,
    draw_structure,
    generate,
    market_statistics,
    write_synthetic_market,
)


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stocks", type=int, default=300)
    parser.add_argument("--years", type=float, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    config = SynthConfig(n_stocks=args.stocks, n_years=args.years)
    structure = draw_structure(config)
    shocks_s = best_of(args.repeat, lambda: draw_shocks(config, structure))
    generate_s = best_of(args.repeat, lambda: generate(config))
    market = generate(config)
    statistics_s = best_of(args.repeat, lambda: market_statistics(market))
    with tempfile.TemporaryDirectory() as tmp:
        write_s = best_of(1, lambda: write_synthetic_market(tmp, config))
    print(
        json.dumps(
            {
                "stocks": args.stocks,
                "years": args.years,
                "days": len(structure.calendar),
                "generate_s": round(generate_s, 3),
                "draw_shocks_s": round(shocks_s, 3),
                "generate_over_draw_shocks": round(generate_s / shocks_s, 2),
                "statistics_s": round(statistics_s, 3),
                "write_s_including_generate": round(write_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
