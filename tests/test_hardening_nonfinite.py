"""Issue 11 §1.1: a non-finite loss is never silent (nonfinite=stop|skip), no NaN checkpoint replaces a
finite one, summary.json is strict JSON, and a non-finite learning rate is a config error."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from callbacks.nonfinite import NonFiniteGuard
from tests.helpers import FAST, compose_cfg
from train import train
from utils.atomic import write_json_atomic
from utils.config_validation import validate_train_config
from utils.entrypoint import run_main
from utils.errors import ConfigError, NonFiniteLossError

TINY = ["callbacks=minimal", "logger=csv", "data.batch_size=4", "trainer.limit_val_batches=0", *FAST]


def strict_json(path):
    """Parse like a strict JSON reader: a bare NaN/Infinity is an error."""

    def reject(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def ckpt_weights_finite(path) -> bool:
    sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())


def test_issue_command_lr_1e8_exits_nonzero_naming_the_step(tmp_path, capsys):
    """`train.py trainer.max_steps=20 module.optimizer.lr=1e8 ...every_n_train_steps=5`: before, exit 0
    with NaN checkpoints and a bare NaN in summary.json."""
    cfg = compose_cfg(
        [
            "trainer.max_steps=20",
            "module.optimizer.lr=1e8",
            "callbacks.model_checkpoint.every_n_train_steps=5",
            *TINY,
        ],
        tmp_path,
    )
    with pytest.raises(SystemExit) as exc:
        run_main(cfg, train)
    assert exc.value.code == 1
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "non-finite training" in errors[0], errors
    summary = strict_json(tmp_path / "summary.json")
    assert summary["status"] == "stopped_nonfinite"
    assert f"at step {summary['global_step']} " in errors[0]
    for ckpt in (tmp_path / "checkpoints").glob("*.ckpt") if (tmp_path / "checkpoints").exists() else []:
        assert ckpt_weights_finite(ckpt), ckpt


def test_stop_keeps_the_last_finite_checkpoint(tmp_path):
    cfg = compose_cfg(
        [
            "trainer.max_steps=12",
            "callbacks.model_checkpoint.every_n_train_steps=5",
            "+callbacks.nan._target_=tests.hardening_helpers.NaNGradAtStep",
            "+callbacks.nan.step=7",
            *TINY,
        ],
        tmp_path,
    )
    with pytest.raises(NonFiniteLossError, match=r"non-finite training gradients .* at step 7 "):
        train(cfg)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 5
    assert ckpt_weights_finite(tmp_path / "checkpoints" / "last.ckpt")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt", "step000005.ckpt"]
    assert strict_json(tmp_path / "summary.json")["global_step"] == 7


def test_nonfinite_weights_are_never_checkpointed(tmp_path):
    """Weights that turn NaN without a NaN gradient (e.g. an overflowing update) are caught at the save."""
    cfg = compose_cfg(
        [
            "trainer.max_steps=12",
            "callbacks.model_checkpoint.every_n_train_steps=5",
            "+callbacks.nan._target_=tests.hardening_helpers.NaNWeightsAtStep",
            "+callbacks.nan.step=10",
            *TINY,
        ],
        tmp_path,
    )
    with pytest.raises(
        NonFiniteLossError, match=r"weights are non-finite at step 10; not writing .*step000010"
    ):
        train(cfg)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 5 and ckpt_weights_finite(tmp_path / "checkpoints" / "last.ckpt")


def test_skip_drops_exactly_that_update_and_counts_it(tmp_path):
    cfg = compose_cfg(
        [
            "nonfinite=skip",
            "trainer.max_steps=5",
            "callbacks.model_checkpoint.every_n_train_steps=1",
            "+callbacks.nan._target_=tests.hardening_helpers.NaNGradAtStep",
            "+callbacks.nan.step=3",
            *TINY,
        ],
        tmp_path,
    )
    train(cfg)
    ckpts = tmp_path / "checkpoints"
    before, after, next_ = (
        torch.load(ckpts / f"step00000{i}.ckpt", map_location="cpu", weights_only=True) for i in (3, 4, 5)
    )
    for k in before["state_dict"]:  # the skipped update changed nothing, the next one did
        assert torch.equal(before["state_dict"][k], after["state_dict"][k]), k
    assert any(not torch.equal(after["state_dict"][k], next_["state_dict"][k]) for k in after["state_dict"])
    assert ckpt_weights_finite(ckpts / "last.ckpt")
    # AdamW's moments and step count were not touched by the skipped update either
    s_before = before["optimizer_states"][0]["state"]
    s_after = after["optimizer_states"][0]["state"]
    assert all(torch.equal(s_before[i]["exp_avg"], s_after[i]["exp_avg"]) for i in s_before)
    summary = strict_json(tmp_path / "summary.json")
    assert summary["nonfinite"] == {"policy": "skip", "skipped": 1, "skipped_steps": [3]}
    assert summary["status"] == "finished" and summary["global_step"] == 5


def test_guard_stops_on_a_nan_loss_before_the_update():
    trainer = SimpleNamespace(world_size=1, global_step=4, current_epoch=0)
    weight = torch.nn.Parameter(torch.ones(3))
    weight.grad = torch.ones(3)  # finite gradients: the loss alone must trigger the stop
    module = torch.nn.Module()
    module.w = weight
    guard = NonFiniteGuard("stop")
    guard.on_before_backward(trainer, module, torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLossError, match="non-finite training loss nan at step 4"):
        guard.on_before_optimizer_step(trainer, module, None)
    guard.on_before_backward(trainer, module, torch.tensor(2.0))
    guard.on_before_optimizer_step(trainer, module, None)  # finite again: no error
    assert torch.equal(weight.grad, torch.ones(3))


def test_summary_json_is_strict_json(tmp_path):
    write_json_atomic(
        tmp_path / "s.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -math.inf}}
    )
    assert strict_json(tmp_path / "s.json") == {"a": None, "b": [1.0, None], "c": {"d": None}}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


@pytest.mark.parametrize("lr", ["inf", "nan", "-inf", "0", "-1e-3"])
def test_nonfinite_or_nonpositive_lr_is_a_config_error(tmp_path, lr):
    cfg = compose_cfg([f"module.optimizer.lr={lr}", *FAST], tmp_path)
    with pytest.raises(ConfigError, match=r"module.optimizer.lr=.* must be a finite number > 0"):
        validate_train_config(cfg)
