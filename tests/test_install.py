"""``pip install -e .`` (what ``make venv`` runs): every package of the checkout imports from any folder,
and the console scripts ``quartet-train``/``-eval``/``-generate`` run the entry points with conf/ found.

Both run with the interpreter of this test run (``.venv/bin/python`` under ``make test``) in a temporary
folder, without PYTHONPATH, so only the installed project can make the imports work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

NOT_INSTALLED = "is the project installed? `make venv` runs `pip install --no-build-isolation -e .`"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QUARTET_ROOT")}
    return {**env, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def top_level_packages() -> list[str]:
    """Every folder of the checkout with an ``__init__.py`` (tests/, bench/ and scripts/ have none)."""
    return sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))


@pytest.mark.slow
def test_every_package_and_entry_module_imports_from_another_folder(tmp_path):
    names = [*top_level_packages(), "train", "eval", "generate"]
    assert {"lightning_modules", "datamodules", "utils", "models"} <= set(names)
    code = "import importlib, sys\nfor n in sys.argv[1:]: print(n, importlib.import_module(n).__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code, *names],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{NOT_INSTALLED}\n{done.stderr[-3000:]}"
    files = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    for name in names:  # this checkout's files, not another copy's
        want = ROOT / name / "__init__.py" if (ROOT / name).is_dir() else ROOT / f"{name}.py"
        assert Path(files[name]) == want, (name, files[name], NOT_INSTALLED)


@pytest.mark.slow
def test_console_scripts_find_conf_from_another_folder(tmp_path):
    bin_dir = Path(sys.executable).parent
    groups = {
        "train": "module: " + ", ".join(sorted(p.stem for p in (ROOT / "conf" / "module").glob("*.yaml"))),
        "eval": "decoding: " + ", ".join(sorted(p.stem for p in (ROOT / "conf" / "decoding").glob("*.yaml"))),
        "generate": "stage: " + ", ".join(sorted(p.stem for p in (ROOT / "conf" / "stage").glob("*.yaml"))),
    }
    for name, group_line in groups.items():
        script = bin_dir / f"quartet-{name}"
        assert script.is_file(), f"{script} is missing: {NOT_INSTALLED}"
        done = subprocess.run(
            [str(script), "--help"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"{name} is powered by Hydra" in done.stdout
        assert group_line in done.stdout.splitlines(), (name, done.stdout[-2000:])
