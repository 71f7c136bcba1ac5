"""Token rewards of RLMEC's generative reward model (METHODS.md §3, step 6), a pure function.

Used by the ``rlmec_rl_data`` stage (offline RLMEC) and by online RL's ``grm`` reward.
"""

from __future__ import annotations

import torch

#: Clip ranges of ``p_t − 0.5`` (METHODS.md §3, step 6): correct samples earn in [0, 0.5],
#: wrong samples are penalised in [−0.1, 0].
CORRECT_RANGE = (0.0, 0.5)
WRONG_RANGE = (-0.1, 0.0)


def grm_token_rewards(token_probs: torch.Tensor, correct: torch.Tensor | bool) -> torch.Tensor:
    """Token rewards r_t from p_t = P_GRM(y_t | rewriting prompt, y_<t), in fp32.

        correct sample:  r_t = clip(p_t − 0.5,  0,   0.5)
        wrong sample:    r_t = clip(p_t − 0.5, −0.1, 0)

    ``token_probs``: [..., T] probabilities in [0, 1]; ``correct``: a bool or a bool tensor that
    broadcasts against ``token_probs`` (e.g. shape [B, 1] for a [B, T] batch).
    """
    p = token_probs.float()
    if p.numel() and (p.min() < 0 or p.max() > 1):
        raise ValueError("grm_token_rewards: token_probs must be probabilities in [0, 1]")
    shifted = p - 0.5
    as_correct = shifted.clamp(*CORRECT_RANGE)
    as_wrong = shifted.clamp(*WRONG_RANGE)
    correct_t = torch.as_tensor(correct, dtype=torch.bool, device=p.device)
    return torch.where(correct_t, as_correct, as_wrong)
