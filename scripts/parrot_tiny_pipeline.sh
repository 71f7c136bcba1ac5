#!/usr/bin/env bash
# The whole Parrot recipe on the tiny model and the bundled data, on CPU (METHODS.md §1): Ask SFT, chat
# SFT, rollout, chat SFT on the rollout, CaPO negatives, CaPO, then MT-Bench++ (8 turns, written once) for
# the chat model and the CaPO model, graded per turn and pairwise by the STAND-IN judge. The steps and
# their options: scripts/parrot_pipeline.sh.
# Usage: [SESSIONS=200] [TURNS=12] [EXTEND_TO=8] scripts/parrot_tiny_pipeline.sh [OUT_DIR]
SIZE=tiny exec "$(dirname "${BASH_SOURCE[0]}")/parrot_pipeline.sh" "${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/outputs/parrot_tiny_pipeline}"
