"""Sharded checkpoints written in place safely (``AtomicModelParallelStrategy``: a sibling temporary
folder swapped onto the target) and the consolidation command's bad input, in one process.

The strategy is driven outside a launch (no process group: broadcast/barrier are no-ops, rank 0), with
Lightning's sharded writer replaced by one that writes a marked folder, so what is checked is exactly
where the bytes go and what a failure mid-write leaves behind (a ``kill -9`` leaves the same: the target
is not touched until the finished folder is swapped in)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from lightning.pytorch.strategies import ModelParallelStrategy

from checkpoints.sharded_strategy import AtomicModelParallelStrategy
from utils import atomic
from utils.atomic import replace_folder
from utils.temp_files import remove_stale_temp_files

ROOT = Path(__file__).resolve().parents[1]


def write_folder(path: Path, version: str, files: tuple[str, ...] = ("__0_0.distcp", "meta.pt")) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name in files:
        (path / name).write_text(version)


def folder_contents(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(path.iterdir())}


@pytest.mark.parametrize("atomic_exchange", [True, False])
def test_replace_folder_puts_the_new_folder_in_place_and_drops_the_old(
    tmp_path, monkeypatch, atomic_exchange
):
    if not atomic_exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    target, new = tmp_path / "last.ckpt", tmp_path / ".last.ckpt.tmp-1"
    write_folder(target, "old", ("__0_0.distcp", "__1_0.distcp", "meta.pt"))
    write_folder(new, "new")
    replace_folder(new, target)
    assert folder_contents(target) == {"__0_0.distcp": "new", "meta.pt": "new"}  # no stale old shard
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_replace_folder_onto_nothing_and_onto_a_single_file_checkpoint(tmp_path):
    write_folder(tmp_path / "a.tmp", "v1")
    replace_folder(tmp_path / "a.tmp", tmp_path / "step2.ckpt")
    (tmp_path / "last.ckpt").write_text("single file")
    write_folder(tmp_path / "b.tmp", "v2")
    replace_folder(tmp_path / "b.tmp", tmp_path / "last.ckpt")
    assert folder_contents(tmp_path / "step2.ckpt")["meta.pt"] == "v1"
    assert folder_contents(tmp_path / "last.ckpt")["meta.pt"] == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "step2.ckpt"]


def fake_sharded_save(version: str, fail_after_first_shard: bool = False):
    def save(self, checkpoint, filepath, storage_options=None):
        path = Path(filepath)
        write_folder(path, version, ("__0_0.distcp",))
        if fail_after_first_shard:
            raise OSError("disk full")
        write_folder(path, version, ("__1_0.distcp", "meta.pt"))

    return save


def test_strategy_writes_beside_the_target_then_swaps(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "last.ckpt"
    write_folder(target, "step2", ("__0_0.distcp", "__1_0.distcp", "meta.pt"))
    seen: list[Path] = []
    inner = fake_sharded_save("step4")

    def recording_save(self, checkpoint, filepath, storage_options=None):
        seen.append(Path(filepath))
        assert folder_contents(target)["meta.pt"] == "step2"  # the target is untouched while writing
        inner(self, checkpoint, filepath, storage_options)

    monkeypatch.setattr(ModelParallelStrategy, "save_checkpoint", recording_save)
    AtomicModelParallelStrategy().save_checkpoint({"state_dict": {}}, target)
    assert seen == [target.with_name(f".last.ckpt.tmp-{os.getpid()}")]
    assert folder_contents(target) == {"__0_0.distcp": "step4", "__1_0.distcp": "step4", "meta.pt": "step4"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


def test_a_failed_sharded_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    write_folder(target, "step2", ("__0_0.distcp", "__1_0.distcp", "meta.pt"))
    monkeypatch.setattr(ModelParallelStrategy, "save_checkpoint", fake_sharded_save("step4", True))
    with pytest.raises(OSError, match="disk full"):
        AtomicModelParallelStrategy().save_checkpoint({"state_dict": {}}, target)
    assert folder_contents(target) == {"__0_0.distcp": "step2", "__1_0.distcp": "step2", "meta.pt": "step2"}
    leftover = [p.name for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert leftover == [f".last.ckpt.tmp-{os.getpid()}"]
    # the next start in the folder removes the half-written folder
    assert remove_stale_temp_files(tmp_path, [".*.tmp-*"]) == [tmp_path / leftover[0]]
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


# ---- scripts/consolidate_checkpoint.py: bad input ------------------------------------------------------
def consolidate_cli(capsys, *argv: str) -> tuple[int, list[str]]:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from consolidate_checkpoint import main
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    code = main(list(argv))
    return code, capsys.readouterr().err.strip().splitlines()


def test_consolidate_refuses_a_folder_that_is_not_a_sharded_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    code, err = consolidate_cli(capsys, str(run))
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {run}: not a sharded checkpoint folder")


def test_consolidate_refuses_a_missing_path_and_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    code, err = consolidate_cli(capsys, str(tmp_path / "nope.ckpt"))
    assert (code, err) == (2, [f"error: {tmp_path / 'nope.ckpt'}: no such checkpoint"])
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    code, err = consolidate_cli(capsys, str(junk), "--out", str(tmp_path / "out"))
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {junk}: not a readable checkpoint")
    assert not (tmp_path / "out").exists()


def test_consolidate_never_overwrites_a_non_empty_output_unasked(tmp_path, capsys):
    out = tmp_path / "hf_model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    code, err = consolidate_cli(capsys, str(tmp_path / "last.ckpt"), "--out", str(out))
    assert code == 2 and err == [
        f"error: --out {out} already exists and is not empty (pass --overwrite to replace it)"
    ]
    assert (out / "config.json").read_text() == "{}"


def test_stale_temp_cleanup_takes_a_name_too_long_to_be_a_folder_as_no_folder(tmp_path):
    assert remove_stale_temp_files("x" * 5000, ["tmp*"]) == []  # a cache_dir typo, not an OSError
    assert remove_stale_temp_files(tmp_path / "missing", ["tmp*"]) == []
