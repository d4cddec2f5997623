"""How fast the simulator writes clicks to Parquet, in one process.

    python -m bench.simulator [--clicks 10000000]

Prints one JSON line last: ``clicks_per_s`` (target: at least 200,000), with the marketplace
build time reported apart from it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from simulator import Marketplace, SimConfig
from simulator.tables import write_parquet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=10_000_000)
    args = parser.parse_args()
    cfg = replace(SimConfig(), clicks=args.clicks)
    started = time.perf_counter()
    market = Marketplace(cfg)
    built = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        paths = write_parquet(market, Path(out))
        written = time.perf_counter()
        size = paths["clicks"].stat().st_size
    result = {
        "clicks": args.clicks,
        "clicks_per_s": round(args.clicks / (written - built)),
        "marketplace_build_s": round(built - started, 2),
        "write_s": round(written - built, 2),
        "parquet_bytes_per_click": round(size / args.clicks, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
