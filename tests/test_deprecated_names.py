"""Renamed config names keep working for one release, with one deprecation line each (issue #20)."""

from __future__ import annotations

from utils.deprecated_names import rewrite_overrides


def test_old_group_and_key_names_are_rewritten_once_each():
    args, notes = rewrite_overrides(
        [
            "method=all",
            "method.ks=[1,3]",
            "+method.x=1",
            "task_name=exp",
            "model=hf",
            "--help",
            "data.method=a",
        ]
    )
    assert args == [
        "decoding=all",
        "decoding.ks=[1,3]",
        "+decoding.x=1",
        "run_name=exp",
        "model=hf",
        "--help",
        "data.method=a",
    ]
    assert notes == [
        "deprecated: 'method' is now 'decoding'; the old name works until the next release",
        "deprecated: 'task_name' is now 'run_name'; the old name works until the next release",
    ]


def test_new_names_pass_unchanged():
    assert rewrite_overrides(["decoding=greedy", "run_name=x", "methods=1"]) == (
        ["decoding=greedy", "run_name=x", "methods=1"],
        [],
    )
