"""Make a saved Quartet MoE folder self-contained, as hub models with custom code are.

:func:`write_remote_code` copies the modeling and configuration files (and the MoE layer, router,
dispatch, CPU-linear and NLL files they use) flat into the folder, turning their package-relative imports
(``from ..moe.layer import``, ``from ..nll import``) into same-folder ones (``from .layer import``),
and writes ``auto_map`` into ``config.json``. Plain transformers then loads the folder with
``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)``, without Quartet installed.
Inside Quartet the classes are registered with the Auto classes (``models/registry.py``), so
Quartet's loaders need no ``trust_remote_code``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from utils.atomic import write_text_atomic

MODELS_DIR = Path(__file__).resolve().parents[1]
#: file in the exported folder -> its source under ``models/``
REMOTE_CODE_FILES = {
    "configuration_quartet_moe.py": "quartet_moe/configuration_quartet_moe.py",
    "modeling_quartet_moe.py": "quartet_moe/modeling_quartet_moe.py",
    "layer.py": "moe/layer.py",
    "router.py": "moe/router.py",
    "dispatch.py": "moe/dispatch.py",
    "nll.py": "nll.py",
    "cpu_linear.py": "cpu_linear.py",
}
AUTO_MAP = {
    "AutoConfig": "configuration_quartet_moe.QuartetMoEConfig",
    "AutoModel": "modeling_quartet_moe.QuartetMoEModel",
    "AutoModelForCausalLM": "modeling_quartet_moe.QuartetMoEForCausalLM",
}
_PACKAGE_IMPORT = re.compile(r"^(\s*)from \.\.(?:moe\.)?(\w+) import ", re.MULTILINE)


def flatten_imports(source: str) -> str:
    """``from ..moe.X import`` / ``from ..X import`` -> ``from .X import``; anything else unchanged."""
    return _PACKAGE_IMPORT.sub(r"\1from .\2 import ", source)


def write_remote_code(out_dir: str | Path) -> list[Path]:
    """Copy the modeling files into ``out_dir`` and add ``auto_map`` to its ``config.json``."""
    out = Path(out_dir)
    written = []
    for name, source in REMOTE_CODE_FILES.items():
        text = flatten_imports((MODELS_DIR / source).read_text(encoding="utf-8"))
        if re.search(r"^\s*from \.\.", text, re.MULTILINE):
            raise RuntimeError(f"{source}: an import reaches outside the exported folder")
        write_text_atomic(out / name, text)
        written.append(out / name)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["auto_map"] = dict(AUTO_MAP)
    write_text_atomic(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return written
