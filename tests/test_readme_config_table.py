"""The README's config-group table lists every option file under ``conf/``, and nothing that isn't there.

A row names one or more groups in backticks (first cell) and their options in backticks (second cell;
text in parentheses is description). An option is ``name``, a glob such as ``rlmec_*``, or
``group/sub=name`` for a nested group such as ``hydra/launcher``. Unqualified options count for every
group of their row. The failure message names each missing file and the row it belongs in."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from tests.conftest import ROOT

README = ROOT / "README.md"
CONF = ROOT / "conf"
TICKS = re.compile(r"`([^`]+)`")


def readme_rows(text: str) -> list[tuple[list[str], list[str]]]:
    """(groups, options) of each row of the table under ``## Config groups``."""
    section = text.split("## Config groups", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or not TICKS.search(cells[0]):
            continue  # the header, the separator, and prose
        options = cells[1]
        while re.search(r"\([^()]*\)", options):  # descriptions, possibly with backticks of their own
            options = re.sub(r"\([^()]*\)", "", options)
        rows.append((TICKS.findall(cells[0]), TICKS.findall(options)))
    return rows


def conf_groups() -> dict[str, list[str]]:
    """Group path (``model``, ``hydra/launcher``) -> its option names (the ``*.yaml`` stems)."""
    groups: dict[str, list[str]] = {}
    for yaml in sorted(CONF.rglob("*.yaml")):
        if yaml.parent != CONF:  # conf/train.yaml etc. are primary configs, not options
            groups.setdefault(yaml.parent.relative_to(CONF).as_posix(), []).append(yaml.stem)
    return groups


def table_problems(rows: list[tuple[list[str], list[str]]], groups: dict[str, list[str]]) -> list[str]:
    """Every disagreement between the table and the conf/ tree, one line each."""
    listed: dict[str, tuple[str, list[str]]] = {}  # group -> (its row's label, its option patterns)
    for row_groups, options in rows:
        label = ", ".join(f"`{g}`" for g in row_groups)
        for g in row_groups:
            listed[g] = (label, [o for o in options if "=" not in o])
        for qualified in (o for o in options if "=" in o):
            group, name = qualified.split("=", 1)
            listed.setdefault(group, (label, []))[1].append(name)
    problems = []
    for group, names in groups.items():
        top = group.split("/")[0]
        if group not in listed:
            where = f"the row of `{top}`" if top in listed else "a new row"
            problems.append(
                f"conf/{group}/ is not in README's config-group table (add `{group}=...` to {where})"
            )
            continue
        label, patterns = listed[group]
        for name in names:
            if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                problems.append(
                    f"conf/{group}/{name}.yaml is missing from the README row {label}: add `{name}`"
                )
    for group, (label, patterns) in listed.items():
        for p in patterns:
            if not any(fnmatch.fnmatchcase(n, p) for n in groups.get(group, [])):
                problems.append(f"README row {label} lists `{p}`, but no conf/{group}/{p}.yaml exists")
    return problems


def test_readme_table_lists_every_conf_option_and_no_other():
    problems = table_problems(readme_rows(README.read_text()), conf_groups())
    assert not problems, "README.md ## Config groups vs conf/:\n" + "\n".join(problems)


def test_the_check_names_the_missing_file_and_its_row(tmp_path: Path):
    rows = readme_rows(
        "## Config groups\n\n| group | options | what |\n|---|---|---|\n"
        "| `experiment` | `sft_tiny`, `rlmec_*` (RLMEC, `_tiny` and `_hf`) | recipes |\n"
        "| `paths`, `hydra` | `default`; `hydra/launcher=slurm` (submitit) | folders |\n"
        "| `logger` | `csv`, `gone` | |\n\n## Next\n| `model` | `tiny` | |\n"
    )
    assert rows == [
        (["experiment"], ["sft_tiny", "rlmec_*"]),
        (["paths", "hydra"], ["default", "hydra/launcher=slurm"]),
        (["logger"], ["csv", "gone"]),
    ]
    groups = {
        "experiment": ["sft_tiny", "rlmec_tiny", "rlmec_dpo_hf", "grpo_tiny"],
        "paths": ["default"],
        "hydra": ["default"],
        "hydra/launcher": ["slurm", "local"],
        "logger": ["csv"],
        "reward": ["exact_match"],
    }
    assert table_problems(rows, groups) == [
        "conf/experiment/grpo_tiny.yaml is missing from the README row `experiment`: add `grpo_tiny`",
        "conf/hydra/launcher/local.yaml is missing from the README row `paths`, `hydra`: add `local`",
        "conf/reward/ is not in README's config-group table (add `reward=...` to a new row)",
        "README row `logger` lists `gone`, but no conf/logger/gone.yaml exists",
    ]
