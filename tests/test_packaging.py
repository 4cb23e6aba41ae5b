"""The three places that list the software agree: pyproject.toml (pip, `make`), environment.yml
(conda users) and workflow/envs/n2sr.yaml (--use-conda jobs), so a run does not depend on which
way it was installed. Also the workflow catalog's usage file, read as the catalog reads it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def pip_requirements() -> dict[str, str]:
    """PyPI name -> version specifier of the package's and the dev extra's dependencies."""
    project = pyproject()["project"]
    reqs = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]
    return {r.name.lower(): str(r.specifier) for r in reqs}


def conda_requirements(path: Path) -> tuple[dict[str, str], list[str]]:
    """(PyPI name -> specifier in pip syntax, pip entries) of a conda environment file."""
    deps = yaml.safe_load(path.read_text(encoding="utf-8"))["dependencies"]
    found, pip = {}, []
    for dep in deps:
        if isinstance(dep, dict):
            pip.extend(dep["pip"])
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", dep)
        name, spec = m.group(1).lower(), m.group(2).replace(" ", "")
        if re.fullmatch(r"=[^=<>!].*", spec):  # conda's `=X` pins like pip's `==X`
            spec = "=" + spec
        found[CONDA_NAMES.get(name, name)] = spec
    for entry in pip:
        if not entry.startswith("-e"):
            r = Requirement(entry)
            found[r.name.lower()] = str(r.specifier)
    return found, pip


def same(a: str, b: str) -> bool:
    return sorted(a.split(",")) == sorted(b.split(","))


def test_environment_yml_lists_every_dependency_with_the_same_versions():
    conda, pip = conda_requirements(REPO / "environment.yml")
    wanted = pip_requirements()
    missing = sorted(set(wanted) - set(conda))
    assert not missing, f"environment.yml lacks {missing} (pyproject.toml lists them)"
    differ = {n: (wanted[n], conda[n]) for n in wanted if not same(wanted[n], conda[n])}
    assert not differ, f"pyproject.toml vs environment.yml versions differ: {differ}"
    assert "-e ." in pip  # the package itself, editable


def test_python_versions_agree():
    required = pyproject()["project"]["requires-python"]
    assert required == ">=3.11"
    for path in (REPO / "environment.yml", REPO / "workflow/envs/n2sr.yaml"):
        conda, _ = conda_requirements(path)
        assert conda["python"] == "==3.11", (path.name, conda["python"])


def test_job_environment_installs_the_package_with_its_pinned_dependencies():
    """workflow/envs/n2sr.yaml lists no versions of its own: it installs this repository (../..
    from .snakemake/conda/), so pyproject.toml's pins are the only ones."""
    conda, pip = conda_requirements(REPO / "workflow/envs/n2sr.yaml")
    assert pip == ["-e ../.."]
    assert set(conda) == {"python", "pip"}


def test_workflow_catalog_usage_file():
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text(encoding="utf-8"))["usage"]
    assert set(usage) <= {"mandatory-flags", "software-stack-deployment", "report"}
    assert usage["software-stack-deployment"]["conda"] is True and usage["report"] is True
    assert usage["mandatory-flags"]["desc"].strip() and "--configfile" in usage["mandatory-flags"]["flags"]
    assert (REPO / "workflow/Snakefile").is_file() and (REPO / "config/README.md").is_file()
