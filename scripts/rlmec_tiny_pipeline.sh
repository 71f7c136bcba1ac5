#!/usr/bin/env bash
# RLMEC end to end on the tiny model and the bundled arithmetic problems, on CPU (METHODS.md §3): the
# reasoning_tiny SFT policy, sampling, the stand-in teacher (arith_rules), the GRM, the RL data, RLMEC,
# and greedy accuracy before and after. The steps and their options: scripts/rlmec_pipeline.sh.
# Usage: [PROBLEMS=400] [SEEDS="1 2"] [BASELINES=1] scripts/rlmec_tiny_pipeline.sh [OUT_DIR]
SIZE=tiny exec "$(dirname "${BASH_SOURCE[0]}")/rlmec_pipeline.sh" "${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/outputs/rlmec_tiny_pipeline}"
