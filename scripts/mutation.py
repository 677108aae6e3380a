"""Mutation testing of the core modules with mutmut 3 (`make mutation`), and its report tests/MUTATION.md.

    python scripts/mutation.py run [MODULE ...]   # mutmut over TARGETS' functions (all modules by default)
    python scripts/mutation.py report             # tests/MUTATION.md from mutants/*.meta

mutmut's settings (the files it mutates, the test files whose coverage picks each mutant's tests, `-m "not
slow"`) are in pyproject.toml's [tool.mutmut]. A mutant counts as equivalent only where
tests/mutation_equivalent.toml gives its function, its changed line and the reason; a changed line that no
longer matches the code shows up as a survivor again.
"""
from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tomllib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "tests" / "MUTATION.md"
EQUIVALENT = ROOT / "tests" / "mutation_equivalent.toml"


def _functions(module: str, *names: str) -> list[str]:
    """mutmut's mutant-name patterns of the functions (`f`) or methods (`Class.f`) of imagefolder.`module`."""
    return [f"imagefolder.{module}.x" + ("ǁ" + name.replace(".", "ǁ") if "." in name else "_" + name) + "__mutmut_*"
            for name in names]


# what `make mutation` mutates, per report row: a module's every function, or the functions named (stats,
# quantize, layouts, checkpoint: whole modules; the rest: the sampler, config's run identity and checks,
# pipeline's run names, the trainer's resume, the data split)
TARGETS: dict[str, list[str]] = {
    "stats": ["imagefolder.stats.*"],
    "quantize": ["imagefolder.quantize.*"],
    "layouts": ["imagefolder.layouts.*"],
    "sampler": _functions("sampler", "sample_tokens", "candidates", "guidance_weights", "sample", "Forcing.resolve",
                          "KVCache.extend", "CachedSteps.__call__"),
    "generator_sampling": _functions("generator", "Generator.sample", "Generator._check_labels"),
    "run_identity": _functions("config", "role", "field_roles", "run_definition", "without_roles", "_select"),
    "config_checks": _functions("config", "check_types", "check_value", "_is_instance", "_describe", "_type_error",
                                "_unknown_field", "_check", "_need", "validate", "_validate_train"),
    "run_names": _functions("pipeline", "run_path", "run_definition", "config_hash", "tokenizer_name",
                            "generator_name"),
    "checkpoint": ["imagefolder.checkpoint.*"],
    "resume": _functions("train", "resume", "_load_exactly"),
    "data_split": _functions("emoji", "split_of") + _functions("data", "split_folder", "split_files", "_spread"),
}


def patterns(modules: list[str]) -> list[str]:
    unknown = [m for m in modules if m not in TARGETS]
    if unknown:
        raise SystemExit(f"scripts/mutation.py: unknown module(s) {unknown}; known: {list(TARGETS)}")
    return [p for m in modules for p in TARGETS[m]]


def run(modules: list[str]) -> int:
    """mutmut run over the modules' patterns, at low priority, one worker per core, one torch thread each
    (OMP_NUM_THREADS here, `--torch-threads 1` in pyproject's [tool.mutmut] for the tests' own setting)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    (ROOT / "mutants").mkdir(exist_ok=True)
    data = ROOT / "mutants" / "data"  # the tests run inside mutants/ and read the smoke data at data/
    if not data.exists():
        data.symlink_to(ROOT / "data", target_is_directory=True)
    cmd = ["nice", "-n", "10", str(Path(sys.executable).parent / "mutmut"), "run",
           "--max-children", str(os.cpu_count() or 1), *patterns(modules)]
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def results() -> dict[str, str]:
    """Mutant name → mutmut's status ("not checked" for a mutant mutmut has not run)."""
    from mutmut.stats import status_by_exit_code
    out = {}
    for meta in sorted((ROOT / "mutants" / "imagefolder").glob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        out.update({name: status_by_exit_code[code] for name, code in codes.items()})
    return out


def changed_lines(name: str) -> str:
    """The mutant's changed lines, `- old` / `+ new`, from mutmut's diff."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    diff = get_diff_for_mutant(name, path=f"imagefolder/{name.split('.')[1]}.py")
    return "\n".join(line.rstrip() for line in diff.splitlines()
                     if line[:1] in "-+" and not line.startswith(("---", "+++")))


def function_of(name: str) -> str:
    """'imagefolder.config.x_check_types__mutmut_3' → 'config.check_types'; methods as 'Class.method'."""
    module, mangled = name.split(".")[1], name.split(".", 2)[2].rsplit("__mutmut_", 1)[0]
    return f"{module}." + (mangled[2:].replace("ǁ", ".") if mangled.startswith("xǁ") else mangled[2:])


def equivalents() -> dict[tuple[str, str], str]:
    """(function, changed lines) → why the mutant cannot change behaviour the package promises."""
    entries = tomllib.loads(EQUIVALENT.read_text())["equivalent"] if EQUIVALENT.exists() else []
    return {(e["function"], e["change"].strip()): e["reason"] for e in entries}


def measured() -> str:
    """When mutmut last wrote a result."""
    newest = max(p.stat().st_mtime for p in (ROOT / "mutants" / "imagefolder").glob("*.py.meta"))
    return f"{datetime.fromtimestamp(newest, UTC):%Y-%m-%d %H:%M}"


def commit() -> str:
    """The commit that mutmut recorded when it collected its test statistics (the mutants are made from the
    working tree, which may hold changes on top of it)."""
    stats = json.loads((ROOT / "mutants" / "mutmut-stats.json").read_text())
    return f"the working tree on top of {stats['git_commit'][:7]}"


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "–"


def report() -> str:
    status, known = results(), equivalents()
    rows, survivors, used = [], [], set()
    totals: Counter[str] = Counter()
    for module, pats in TARGETS.items():
        names = sorted((n for n in status if any(fnmatch.fnmatchcase(n, p) for p in pats)),
                       key=lambda n: (n.rsplit("__mutmut_", 1)[0], int(n.rsplit("_", 1)[1])))
        if not names:
            continue
        count = Counter(status[n] for n in names)
        for n in names:
            if status[n] in ("killed", "not checked"):
                continue
            key = (function_of(n), changed_lines(n))
            reason = known.get(key)
            if reason is not None:
                used.add(key)
                count["equivalent"] += 1
            survivors.append((module, n, status[n], key[1], reason))
        count["total"] = len(names)
        totals.update(count)
        rows.append((module, count))
    lines = [
        "# Mutation testing of the core modules",
        "",
        "Written by `make mutation` (scripts/mutation.py) from mutmut's results; do not edit by hand.",
        f"Code: {commit()}, measured {measured()} UTC. Tests: the files and deselections of pyproject.toml's "
        "[tool.mutmut], fast only (`-m \"not slow\"`); each mutant runs those of them that reach its function.",
        "",
        "Score = killed / (mutants − equivalent): a mutant timed out or not checked counts against it (a timeout "
        "on a loaded machine is often torch's threads spinning, not the mutant); the score of the checked leaves "
        "the not checked out.",
        "",
        "| module | mutants | killed | timed out | survived | no tests | not checked | equivalent | score | "
        "score of the checked |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for module, c in [*rows, ("**all**", totals)]:
        other = c["total"] - sum(c[s] for s in ("killed", "timeout", "survived", "no tests", "not checked"))
        detected = c["killed"]
        lines.append(f"| {module} | {c['total']} | {c['killed']} | {c['timeout']} | {c['survived']} | "
                     f"{c['no tests'] + other} | {c['not checked']} | {c['equivalent']} | "
                     f"{_percent(detected, c['total'] - c['equivalent'])} | "
                     f"{_percent(detected, c['total'] - c['equivalent'] - c['not checked'])} |")
    if totals["not checked"]:
        lines += ["", f"{totals['not checked']} mutants were not checked: the run stopped before it reached them."]
    lines += ["", "## Survivors", "",
              "Each mutant that no fast test kills: equivalent (with the reason, from "
              "tests/mutation_equivalent.toml) or open.", ""]
    for module, name, state, change, reason in survivors:
        verdict = f"equivalent: {reason}" if reason else f"**open** ({state})"
        lines += [f"- `{name}` ({module}): {verdict}", "", "  ```diff",
                  *("  " + line for line in change.splitlines()), "  ```", ""]
    stale = sorted(set(known) - used)
    if stale:
        lines += ["## Equivalence entries that matched no survivor", "",
                  *(f"- `{f}`: `{c.splitlines()[0] if c else ''}`" for f, c in stale), ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "report"):
        raise SystemExit(__doc__)
    os.chdir(ROOT)  # mutmut reads pyproject.toml and mutants/ from the working directory
    if argv[0] == "run":
        return run(argv[1:] or list(TARGETS))
    REPORT.write_text(report() + "\n")
    print(f"wrote {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
