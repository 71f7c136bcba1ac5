"""Issue 11 §1.5: the pieces behind four one-line errors (non-UTF-8 data, a corrupt checkpoint, a
checkpoint of another shape, a run folder under a file). The end-to-end cases are in
``tests/test_reliability_bad_input.py``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from checkpoints.preload_check import (
    check_checkpoint_file,
    check_checkpoint_fits,
    config_diff,
    first_mismatch,
)
from utils.errors import DataError, QuartetError
from utils.hydra_callbacks import blocking_file
from utils.text_files import iter_lines, read_text

ROOT = Path(__file__).resolve().parents[1]


def test_a_non_utf8_byte_is_named_by_file_line_and_character_column(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_bytes(b"ok\n" + "é€x".encode() + b"\xe9\n")  # column 4: after 3 characters (6 bytes)
    lines = iter_lines(f)
    assert next(lines) == (1, "ok\n")
    with pytest.raises(DataError) as e:
        next(lines)
    assert str(e.value) == f"{f}:2: not valid UTF-8 (byte 0xe9 at column 4); save the file as UTF-8"
    with pytest.raises(DataError, match=r"d.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 4\)"):
        read_text(f)
    f.write_bytes(b"a\nb\r\nc")
    assert read_text(f) == "a\nb\r\nc" and [n for n, _ in iter_lines(f)] == [1, 2, 3]


def _ckpt(tmp_path: Path, name: str = "c.ckpt") -> Path:
    path = tmp_path / name
    torch.save({"state_dict": {"model.w": torch.arange(2048.0)}, "hyper_parameters": {}}, path)
    return path


def test_a_good_checkpoint_loads_and_bad_ones_are_one_line(tmp_path):
    good = _ckpt(tmp_path)
    assert torch.equal(check_checkpoint_file(str(good))["state_dict"]["model.w"], torch.arange(2048.0))
    data = good.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) - 300])
    with pytest.raises(QuartetError, match=r"cut.ckpt: corrupt or truncated checkpoint \(BadZipFile"):
        check_checkpoint_file(str(cut))
    # Overwrite bytes inside the tensor data: the zip still opens, the member's CRC does not match.
    with zipfile.ZipFile(good) as z:
        info = next(i for i in z.infolist() if i.file_size == 2048 * 4)
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 100
    flipped = tmp_path / "flipped.ckpt"
    flipped.write_bytes(
        data[:offset] + bytes(b ^ 0xFF for b in data[offset : offset + 8]) + data[offset + 8 :]
    )
    with pytest.raises(
        QuartetError, match=rf"flipped.ckpt: corrupt checkpoint \(member {info.filename} fails"
    ):
        check_checkpoint_file(str(flipped))
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(QuartetError, match="empty.ckpt: the checkpoint file is empty"):
        check_checkpoint_file(str(tmp_path / "empty.ckpt"))


def test_a_sharded_checkpoint_with_a_short_or_missing_shard_is_refused(tmp_path):
    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "sharded"
    dcp.save({"w": torch.arange(4096.0)}, checkpoint_id=str(folder), no_dist=True)
    assert check_checkpoint_file(str(folder)) is None  # intact: passes
    shard = next(folder.glob("*.distcp"))
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(
        QuartetError, match=rf"truncated sharded checkpoint: shard {shard.name} has 100 bytes"
    ):
        check_checkpoint_file(str(folder))
    assert size > 4096 * 4
    shard.unlink()
    with pytest.raises(QuartetError, match=rf"shard {shard.name} is missing"):
        check_checkpoint_file(str(folder))


def test_first_mismatch_and_config_diff():
    saved = {"model.a": torch.zeros(2, 3), "model.b": torch.zeros(4), "loss_ref.x": torch.zeros(1)}
    assert first_mismatch(saved, {"model.a": torch.Size([2, 3]), "model.b": torch.Size([4])}) is None
    assert (
        first_mismatch(saved, {"model.a": torch.Size([2, 5]), "model.b": torch.Size([5])})
        == "model.a is [2, 3] in the checkpoint but [2, 5] in the model"
    )
    assert (
        first_mismatch(
            saved, {"model.a": torch.Size([2, 3]), "model.b": torch.Size([4]), "model.c": torch.Size([1])}
        )
        == "model.c is in the model but not in the checkpoint"
    )
    assert config_diff({"h": 32, "l": {"r": 8}, "x": 1}, {"h": 64, "l": {"r": 8}, "y": 2}, "model") == [
        "model.h: 32 -> 64",
        "model.x: 1 -> <unset>",
        "model.y: <unset> -> 2",
    ]


def test_a_tiny_model_checkpoint_of_another_width_names_the_tensor_and_the_key():
    from omegaconf import OmegaConf

    model = OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml")
    model.tokenizer = str(ROOT / "assets" / "tokenizer")
    saved_cfg = OmegaConf.to_container(model)
    current = OmegaConf.merge(model, {"hidden_size": 32, "intermediate_size": 96})
    vocab = 1024
    ckpt = {
        "state_dict": {"model.model.embed_tokens.weight": torch.zeros(vocab, 64)},
        "hyper_parameters": {"model": saved_cfg},
    }
    with pytest.raises(QuartetError) as e:
        check_checkpoint_fits("run/last.ckpt", ckpt, current)
    assert str(e.value) == (
        f"ckpt_path=run/last.ckpt: the checkpoint does not fit the model: model.model.embed_tokens.weight is "
        f"[{vocab}, 64] in the checkpoint but [{vocab}, 32] in the model (config changed since the checkpoint: "
        "model.hidden_size: 64 -> 32; model.intermediate_size: 192 -> 96)"
    )
    check_checkpoint_fits("run/last.ckpt", ckpt, model)  # same config: no build, no error


def test_blocking_file_finds_the_file_on_the_way(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("x")
    assert blocking_file(tmp_path / "a" / "f" / "run" / "x") == tmp_path / "a" / "f"
    assert blocking_file(tmp_path / "a" / "new" / "run") is None
    assert blocking_file(tmp_path / "a") is None
