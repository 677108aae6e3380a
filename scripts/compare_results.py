"""Does a re-run reproduce the committed tables? Compare two `results/<profile>/tables` folders.

For every table both folders hold (or those named), every row (matched by its `variant`, else by the fewest
leading columns that name each row once, as in Table 4's probe: features and label) and every metric that
has a seed sd beside it (`<metric> sd`), print the two means, their difference and the difference in units
of the committed sd; a row is flagged where the difference exceeds that sd.
Usage: python scripts/compare_results.py results/cpu/tables OTHER/results/cpu/tables [table ...]
"""
import sys
from pathlib import Path

import pandas as pd


def row_key(table: pd.DataFrame) -> list[str]:
    """The columns that name a row: `variant` where it names each row once, else the fewest leading columns
    that do."""
    if "variant" in table.columns and table["variant"].is_unique:
        return ["variant"]
    return next((list(table.columns[:n]) for n in range(1, table.shape[1] + 1)
                 if not table.duplicated(list(table.columns[:n])).any()), list(table.columns))


def compare(committed: Path, rerun: Path, names: list[str]) -> pd.DataFrame:
    """One row per (table, row, metric): both means, their difference, |difference| / sd, and whether > sd."""
    names = names or sorted(p.stem for p in committed.glob("*.csv") if (rerun / p.name).exists())
    out = []
    for name in names:
        a, b = (pd.read_csv(folder / f"{name}.csv", dtype=str) for folder in (committed, rerun))
        key = row_key(a)
        a, b = a.set_index(key), b.set_index(key)
        for metric in (c.removesuffix(" sd") for c in a.columns if c.endswith(" sd")):
            for label, row in a.iterrows():
                if label not in b.index or pd.isna(row[metric]):
                    continue
                old, new, sd = float(row[metric]), float(b.at[label, metric]), float(row[f"{metric} sd"])
                out.append({"table": name, "row": " / ".join(label) if isinstance(label, tuple) else label,
                            "metric": metric, "committed": old, "re-run": new,
                            "difference": new - old, "committed sd": sd,
                            "|difference| / sd": abs(new - old) / sd if sd > 0 else float("nan"),
                            "beyond sd": abs(new - old) > sd})
    return pd.DataFrame(out)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    result = compare(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
    if result.empty:
        sys.exit("no table with a seed sd in both folders")
    pd.set_option("display.width", 200, "display.max_rows", None)
    print(result.to_string(index=False, float_format="%.4g"))
    print(f"\n{len(result)} means compared, {result['beyond sd'].sum()} differ by more than the committed sd; "
          f"largest |difference| / sd {result['|difference| / sd'].max():.3g}")
