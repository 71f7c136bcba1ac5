"""Quartet's algorithms that are not Lightning, shared by the training modules and the generate.py stages.

- ``logprobs.py``: token and sequence log-probs of labelled tokens (``model_token_logprobs``);
- ``reference.py``: the frozen reference π_ref (copy, precomputed, adapter_off) and
  ``frozen_token_logprobs``, the one way a frozen model is scored;
- ``token_rewards.py``: RLMEC's generative-reward-model token rewards;
- ``minimum_edit.py``, ``edit_steps.py``, ``alignment.py``: RLMEC's minimum-edit rewrite, its prompts and parsers, and
  the imitation weights (used by the ``rlmec_*`` stages and by online RLMEC);
- ``advantages.py``, ``rewards.py``, ``rollouts.py``: online RL's advantage estimators, rewards and rollout tensors;
- ``losses/``: the methods' losses as pure functions (SFT, CaPO, RLMEC, Top-P MoE).

Modelled on torchtune's ``rlhf/`` (losses, rewards and sequence processing apart from the recipes).
Layer: above ``utils``, ``models``, ``inference`` and ``reasoning``; below ``datamodules``,
``lightning_modules`` and ``stages``.
"""
