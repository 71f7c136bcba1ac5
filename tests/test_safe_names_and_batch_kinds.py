"""Issue 21, Bad 1 and Bad 2 as pure functions: a name from the config becomes one file-name component
or one ``ConfigError`` line, and every shipped module and data module declares its batch kind."""

from __future__ import annotations

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from tests.helpers import ROOT
from utils.batch_kinds import BATCH_KINDS, data_options_for, option_target
from utils.errors import ConfigError
from utils.safe_names import file_name_part


@pytest.mark.parametrize(
    ("name", "derived", "expected"),
    [
        ("llama-3.1_8b", False, "llama-3.1_8b"),
        ("Qwen/Qwen2.5-7B", True, "Qwen_Qwen2.5-7B"),  # FastChat's convention for a hub id
        ("../../../m", True, ".._.._.._m"),  # one name, inside its folder
        ("/models/judge", True, "_models_judge"),
        ("C:\\judges\\j", True, "C:_judges_j"),
    ],
)
def test_a_name_becomes_one_component(name, derived, expected):
    assert file_name_part(name, "k", derived=derived) == expected


@pytest.mark.parametrize(
    ("name", "derived", "reason"),
    [
        ("../../escape", False, "a path, not a name"),
        ("/etc/escape", False, "a path, not a name"),
        ("a\\b", False, "a path, not a name"),
        ("..", False, "'..' names a folder, not a file"),
        ("..", True, "'..' names a folder, not a file"),
        (".", True, "'.' names a folder, not a file"),
        ("", False, "an empty name"),
        ("   ", True, "an empty name"),
        (None, True, "an empty name"),
        ("a\x00b", False, "it holds a control character"),
        ("x" * 201, False, "longer than 200 bytes"),
    ],
)
def test_an_unsafe_name_is_one_config_error_naming_the_key(name, derived, reason):
    with pytest.raises(ConfigError) as e:
        file_name_part(name, "task.model_id", derived=derived)
    assert len(e.value.problems) == 1
    assert e.value.problems[0].startswith(f"task.model_id={name!r} can't be used as a file name: {reason}")


def test_every_shipped_module_and_data_module_declares_a_known_batch_kind():
    for f in sorted((ROOT / "conf" / "module").glob("*.yaml")):
        consumes = get_class(OmegaConf.load(f)._target_).consumes
        assert consumes and set(consumes) <= set(BATCH_KINDS), f.name
    for f in sorted((ROOT / "conf" / "data").glob("*.yaml")):
        assert get_class(option_target(f)).batch_kind in BATCH_KINDS, f.name
    assert data_options_for(("tokens",)) == ["data=ask", "data=chat", "data=lm_corpus", "data=reasoning_sft"]
    assert data_options_for(("preference", "rlmec")) == ["data=preference", "data=rlmec"]
