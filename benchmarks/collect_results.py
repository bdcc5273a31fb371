"""Assemble benchmarks/RESULTS.md from the per-benchmark tables in benchmarks/results/.

Each benchmark script writes its own ``results/<script>.md`` (with the machine it ran on);
this script concatenates them under one header so that RESULTS.md is never edited by hand.

    python benchmarks/collect_results.py
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = [
    "bench_theory",
    "bench_network",
    "bench_convex",
    "bench_grid",
    "bench_bayes",
    "bench_dynamics",
    "bench_sweep",
]

HEADER = """# qnr benchmark results

Assembled by `python benchmarks/collect_results.py` from `benchmarks/results/*.md`; each
section is written by the script of the same name (run it to refresh that section). All
timings are medians after warm-up (compilation excluded unless stated), with ratios against a
baseline measured in the same process. The machine of each run is stated in its section.
No GPU was lent to the sessions that produced these numbers: every figure below is CPU.
"""


def main() -> None:
    files = {p.stem: p for p in sorted((HERE / "results").glob("*.md"))}
    names = [n for n in ORDER if n in files] + [n for n in files if n not in ORDER]
    parts = [HEADER]
    for name in names:
        parts.append(f"\n---\n\n<!-- {name} -->\n\n" + files[name].read_text().strip() + "\n")
    (HERE / "RESULTS.md").write_text("".join(parts))
    print(f"wrote {HERE / 'RESULTS.md'} ({len(names)} sections)")


if __name__ == "__main__":
    main()
