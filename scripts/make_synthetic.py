"""Write a full-size SYNTHETIC dataset in the DrVD-Bench format (not DrVD-Bench data).

    .venv/bin/python scripts/make_synthetic.py OUT_DIR [--rows 7789] [--images 400] [--large 3]

Rows are split over the four files as in the benchmark; images are 256-2,048 px plus a few of
6,000 px, reused across rows. The folder gets a SYNTHETIC.md saying what it is.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.data.synthetic import FULL_SIZE, FULL_SIZES, NOTICE, write_dataset


def main() -> None:
    """Parse the arguments and write the dataset."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("out", type=Path, help="folder to write (created)")
    p.add_argument("--rows", type=int, default=FULL_SIZE, help="rows in all four files")
    p.add_argument("--images", type=int, default=400, help="distinct images the rows cycle over")
    p.add_argument("--large", type=int, default=3, help="how many of them are 6,000 px")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    t0 = time.perf_counter()
    counts = write_dataset(
        args.out,
        total=args.rows,
        images=args.images,
        sizes=FULL_SIZES,
        large=args.large,
        seed=args.seed,
    )
    took = time.perf_counter() - t0
    rows = ", ".join(f"{stem} {n:,}" for stem, n in counts.items())
    print(f"{args.out}: {sum(counts.values()):,} synthetic rows ({rows}), {args.images} images,")
    print(f"written in {took:.1f} s; see {args.out / NOTICE}")


if __name__ == "__main__":
    main()
