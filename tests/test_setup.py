"""The set-up around the package: the lock file, CITATION.cff, the version, the Makefile's help and errors."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

import imagefolder
from imagefolder import results

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def canonical(name: str) -> str:
    """PEP 503 normalised package name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    """requirements-lock.txt as {name: version}; every entry must be an exact `name==version` pin."""
    pins = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;=<>!~]*)", line.strip())
            assert m, f"requirements-lock.txt: {line!r} is not an exact name==version pin"
            pins[canonical(m[1])] = m[2]
    return pins


def test_lock_pins_every_dependency_of_pyproject():
    pins = lock_pins()
    declared = PYPROJECT["dependencies"] + [d for ds in PYPROJECT["optional-dependencies"].values() for d in ds]
    names = {canonical(re.match(r"[A-Za-z0-9._-]+", d)[0]) for d in declared}
    assert names - set(pins) == set(), "requirements-lock.txt lacks pins for these pyproject dependencies"
    assert "imagefolder" not in pins  # the project itself is installed editable, never pinned


def test_citation_cites_the_paper_and_the_compendium():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["version"] == PYPROJECT["version"]
    paper = cff["preferred-citation"]
    assert "Folded Tokens" in paper["title"]
    assert "2410.01756" in paper["doi"] and "2410.01756" in paper["url"]
    assert [a["family-names"] for a in paper["authors"]][0] == "Li"


def test_version_is_pyprojects_and_in_provenance():
    assert imagefolder.__version__ == PYPROJECT["version"]
    section = results.provenance_section("smoke", seeds=0, data_fingerprint=None)
    assert section["imagefolder_version"] == imagefolder.__version__


def make(*args: str) -> subprocess.CompletedProcess:
    """`make -s ARGS` in the repository root, isolated from a calling make and from exported variables."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PINNED", "VENV"}}
    return subprocess.run(["make", "-s", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_bare_make_prints_help():
    help_ = make("help")
    assert help_.returncode == 0, help_.stderr
    for target in ("help", "setup", "data", "test", "reproduce", "nb-%", "claims", "html", "bench", "clean"):
        assert re.search(rf"^  {re.escape(target)} ", help_.stdout, re.M), f"make help does not list {target}"
    for variable in ("PROFILE=cpu", "VENV=.venv", "PINNED=1"):
        assert f"  {variable} " in help_.stdout
    assert make().stdout == help_.stdout


def test_unknown_notebook_stops_before_anything_runs():
    out = make("nb-99")
    assert out.returncode != 0
    available = " ".join(sorted(p.name.split("_")[0] for p in (ROOT / "notebooks").glob("*.ipynb")))
    assert f"no notebook matches notebooks/99_*; available: {available}" in out.stderr
    assert out.stdout == ""  # neither the set-up nor `imagefolder data` ran


def test_setup_is_pinned_unless_told(tmp_path):
    env = str(tmp_path / "env")  # no stamp there, so -n prints the whole recipe
    pinned, unpinned = make("-n", "setup", f"VENV={env}"), make("-n", "setup", f"VENV={env}", "PINNED=0")
    assert "-c requirements-lock.txt -e '.[dev]'" in pinned.stdout
    assert "requirements-lock.txt" not in unpinned.stdout and "-e '.[dev]'" in unpinned.stdout
    assert "-m venv" not in pinned.stdout  # another VENV is used as it is, never built


def test_a_copied_or_overridden_notebook_is_executed_among_the_variants():
    copy = ROOT / "notebooks" / "97_test_copy.ipynb"
    copy.write_bytes((ROOT / "notebooks" / "03_quantizer_dropout.ipynb").read_bytes())
    try:
        dry = make("-n", "nb-97", "PROFILE=smoke")
    finally:
        copy.unlink()
    assert "results/smoke/variants/97_test_copy/executed/97_test_copy.ipynb" in dry.stdout, dry.stdout + dry.stderr
    original = make("-n", "nb-03", "PROFILE=smoke").stdout
    assert "results/smoke/executed/03_quantizer_dropout.ipynb" in original
    overridden = make("-n", "nb-03", "PROFILE=smoke", """OVERRIDES={"tokenizer.semantic_weight": 0.5}""").stdout
    assert "results/smoke/variants/03_quantizer_dropout/executed/" in overridden
