"""``logger=wandb`` (offline) and ``logger=mlflow`` (SQLite store in the run folder), offline: one 2-step
run with ``logger=[csv,wandb,mlflow]`` writes the same per-step losses to the CSV log, the W&B offline
run and the MLflow store, and no API key from the environment lands in any file of the run folder."""

from __future__ import annotations

import csv
import json
import sqlite3
import struct
from pathlib import Path

import pytest

from tests.helpers import FAST, compose_cfg

SECRETS = {
    "WANDB_API_KEY": "wandbsecret-0123456789abcdef0123456789abcdef01234567",
    "MLFLOW_TRACKING_TOKEN": "mlflowsecret-token-0123456789",
    "MLFLOW_TRACKING_PASSWORD": "mlflowsecret-password-0123456789",
}


def wandb_records(path: Path) -> list[bytes]:
    """The records of a ``run-<id>.wandb`` file. wandb 0.31 has no Python reader (its writer is in Go);
    the layout is LevelDB's log format: a 7-byte file header (``:W&B``, magic 0xBEE1, version 0), then
    32 KiB blocks of chunks, each a 7-byte header (CRC32, uint16 length, type: 1 full, 2 first,
    3 middle, 4 last); a block's tail shorter than a header is padding."""
    data = path.read_bytes()
    assert data[:7] == b":W&B" + struct.pack("<HB", 0xBEE1, 0), data[:7]
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(pending)
            pending = b""
    return records


def wandb_history(path: Path) -> list[dict]:
    """The logged rows (``run.log``) of a W&B offline run file, as {key: value}."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for raw in wandb_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            )
    return rows


def wandb_state(run_file: Path) -> str:
    """For a failure message: the run file's size and the end of wandb-core's log."""
    log = run_file.parent / "logs" / "debug-internal.log"
    tail = log.read_text()[-1500:] if log.is_file() else "(no debug-internal.log)"
    return f"{run_file} has {run_file.stat().st_size} bytes; {log.name}:\n{tail}"


@pytest.mark.slow
def test_wandb_offline_and_mlflow_local_log_the_losses_and_no_key(tmp_path, monkeypatch):
    from train import train

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose_cfg(
        ["logger=[csv,wandb,mlflow]", "debug=default", "export=false", "optimized_metric=train/loss", *FAST],
        tmp_path,
    )
    train(cfg)
    with open(tmp_path / "csv" / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(losses) == 2

    runs = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs  # offline: nothing sent; train() closed the run, so the file is whole
    rows = [r for r in wandb_history(runs[0]) if "train/loss" in r]
    assert [r["train/loss"] for r in rows] == pytest.approx(losses, rel=1e-6), wandb_state(runs[0])
    assert [r["trainer/global_step"] for r in rows] == [0, 1]

    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        got = db.execute("SELECT step, value FROM metrics WHERE key = 'train/loss' ORDER BY step").fetchall()
        experiment = db.execute("SELECT name FROM experiments WHERE experiment_id != '0'").fetchall()
        status = db.execute("SELECT status FROM runs").fetchall()
    assert [s for s, _ in got] == [0, 1] and [v for _, v in got] == pytest.approx(losses, rel=1e-6)
    assert experiment == [("debug",)] and status == [("FINISHED",)]

    for path in tmp_path.rglob("*"):
        try:
            data = path.read_bytes() if path.is_file() else b""
        except FileNotFoundError:  # a temporary file removed while we looked
            continue
        assert not [k for k, v in SECRETS.items() if v.encode() in data], path
