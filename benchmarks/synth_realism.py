"""Does the synthetic market look like the real one where it matters?

Prints, as JSON, :func:`return_statistics` of the real CSI300 data
(``../shared/data/cn_csi300``, universe ``csi300``) next to those of the default
synthetic market (and its oracle IC), so each synthetic figure has its real
reference from the same run.
Usage: ``python benchmarks/synth_realism.py [--provider DIR] [--seed S]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from conceptalpha.data.qlib import load_qlib
from conceptalpha.data.synthetic import SynthConfig, generate, return_statistics

DEFAULT_PROVIDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "cn_csi300"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--provider", type=Path, default=DEFAULT_PROVIDER)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    real = load_qlib(args.provider, "csi300", fields=["close", "volume"])
    synthetic = generate(SynthConfig(seed=args.seed))
    rounded = lambda d: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}  # noqa: E731
    print(
        json.dumps(
            {
                "real_csi300": rounded(return_statistics(real)),
                "synthetic_default": rounded(return_statistics(synthetic.market)),
                "synthetic_oracle_ic": {k: round(v["mean"], 4) for k, v in synthetic.statistics["oracle_ic"].items()},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
