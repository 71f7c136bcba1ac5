"""Rank zero and the run folder under each launcher (torchrun, srun, Lightning's own), read from the
environment alone; the SLURM sweep launcher's config; the sbatch script's syntax. In-process and fast:
the multi-process launches themselves are in test_multinode.py."""

from __future__ import annotations

import subprocess

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from tests.helpers import CONF, ROOT
from utils.errors import ConfigError
from utils.hydra_resolvers import config_subdir, gpus_per_node, log_suffix
from utils.launch_env import check_shared_run_dir, external_launcher, is_rank_zero, rank_label

LAUNCH_VARS = (
    "TORCHELASTIC_RUN_ID",
    "RANK",
    "LOCAL_RANK",
    "GROUP_RANK",
    "NODE_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_JOB_NAME",
    "SLURM_JOB_ID",
)


@pytest.fixture
def launch_env(monkeypatch):
    """A clean launch environment; returns a setter for one launcher's variables."""
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)

    def set_vars(**values: str) -> None:
        for k, v in values.items():
            monkeypatch.setenv(k, v)

    return set_vars


def _torchrun(node: int, local: int, nodes: int = 2, per_node: int = 1) -> dict[str, str]:
    return {
        "TORCHELASTIC_RUN_ID": "none",
        "RANK": str(node * per_node + local),
        "LOCAL_RANK": str(local),
        "GROUP_RANK": str(node),
        "WORLD_SIZE": str(nodes * per_node),
        "LOCAL_WORLD_SIZE": str(per_node),
    }


def _srun(procid: int, node: int, local: int, ntasks: int = 2) -> dict[str, str]:
    return {
        "SLURM_NTASKS": str(ntasks),
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_PROCID": str(procid),
        "SLURM_LOCALID": str(local),
        "SLURM_NODEID": str(node),
        "SLURM_JOB_NAME": "quartet-train",
        "SLURM_JOB_ID": "4242",
    }


@pytest.mark.parametrize(
    ("env", "launcher", "label"),
    [
        ({}, None, ""),  # plain `python train.py`
        (_torchrun(0, 0), "torchrun", ""),
        (_torchrun(0, 1, nodes=1, per_node=2), "torchrun", "rank1"),
        # `torchrun --nnodes 2 --node_rank 1`: LOCAL_RANK is 0 there too, but it is global rank 1
        (_torchrun(1, 0), "torchrun", "rank1"),
        (_srun(0, 0, 0), "slurm", ""),
        (_srun(1, 1, 0), "slurm", "rank1"),  # SLURM_LOCALID 0 on the second node
        # Lightning's own launcher: its children carry LOCAL_RANK / NODE_RANK
        ({"LOCAL_RANK": "1", "NODE_RANK": "0"}, None, "rank1"),
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, None, "node1-local0"),
        # an interactive SLURM shell is not a SLURM launch (Lightning's rule): Lightning launches
        ({**_srun(1, 0, 0), "SLURM_JOB_NAME": "bash", "LOCAL_RANK": "0"}, None, ""),
    ],
)
def test_rank_zero_under_each_launcher(launch_env, env, launcher, label):
    launch_env(**env)
    assert external_launcher() == launcher
    assert rank_label() == label
    assert is_rank_zero() == (label == "")
    assert log_suffix() == (f".{label}" if label else "")


def test_only_rank_zero_saves_the_hydra_config(launch_env, tmp_path):
    launch_env(**_torchrun(0, 0))
    assert config_subdir(None, str(tmp_path)) == ".hydra"
    launch_env(**_torchrun(1, 0))
    assert config_subdir(None, str(tmp_path)) is None  # rank 1 writes nothing into .hydra/


def test_clock_named_run_folder_is_refused_under_torchrun(launch_env):
    default = "${quartet_run_dir:${resume_dir},${paths.log_dir}/${run_name}/runs/${now:%Y-%m-%d_%H-%M-%S}}"
    check_shared_run_dir(default, None)  # one process: the default folder is fine
    launch_env(**_torchrun(1, 0))
    with pytest.raises(ConfigError, match=r"hydra.run.dir: under torchrun \(2 ranks\) every rank must use"):
        check_shared_run_dir(default, None)
    check_shared_run_dir("/runs/pinned", None)
    check_shared_run_dir(default, "/runs/old")  # resume_dir names the folder


def test_clock_named_run_folder_is_refused_under_srun(launch_env):
    launch_env(**_srun(0, 0, 0))
    with pytest.raises(
        ConfigError, match=r"under srun \(2 ranks\).*hydra.run.dir=outputs/slurm-\$SLURM_JOB_ID"
    ):
        check_shared_run_dir("outputs/${now:%H-%M-%S}", None)
    launch_env(SLURM_NTASKS="1")
    check_shared_run_dir("outputs/${now:%H-%M-%S}", None)  # a single task has nobody to disagree with


def test_slurm_sweep_launcher_is_sized_from_the_trainer():
    GlobalHydra.instance().clear()
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    launcher_cfg = cfg.hydra.launcher
    assert launcher_cfg._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher_cfg.nodes, launcher_cfg.tasks_per_node, launcher_cfg.gpus_per_node) == (2, 4, 4)
    assert (launcher_cfg.timeout_min, launcher_cfg.signal_delay_s, launcher_cfg.max_num_timeout) == (
        1440,
        120,
        0,
    )
    launcher = instantiate(launcher_cfg)  # what `-m` builds: submitit's parameters, resolved
    assert launcher.params["tasks_per_node"] == 4 and launcher.params["nodes"] == 2
    assert gpus_per_node("cpu", 4) is None and gpus_per_node("gpu", 8) == 8


def test_plain_submitit_slurm_launcher_composes():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=["hydra/launcher=submitit_slurm"], return_hydra_config=True
        )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.tasks_per_node == 1


def test_sbatch_script_is_valid_bash():
    script = ROOT / "scripts" / "slurm" / "train.sbatch"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    assert "#SBATCH --signal=SIGUSR1@120" in text and "srun " in text
