"""Quartet Top-P MoE causal LM: configuration, modeling, sparse upcycling and remote-code export.

``import models`` registers these classes with transformers' Auto classes (``models/moe_factory.py``
through the model-kind registry), so ``AutoModelForCausalLM.from_pretrained(dir)`` loads
``model_type="quartet_topp_moe"`` folders in Quartet; exported folders also carry the modeling files
(``remote_code.py``) and load with plain transformers and ``trust_remote_code=True``.
"""

from .configuration_quartet_moe import QuartetMoEConfig
from .modeling_quartet_moe import (
    QuartetMoECausalLMOutput,
    QuartetMoEDecoderLayer,
    QuartetMoEForCausalLM,
    QuartetMoEModel,
    QuartetMoEModelOutput,
    QuartetMoEPreTrainedModel,
    causal_lm_loss,
)
from .upcycle import SUPPORTED_DENSE_ARCHITECTURES, upcycle_dense_to_moe

__all__ = [
    "SUPPORTED_DENSE_ARCHITECTURES",
    "QuartetMoECausalLMOutput",
    "QuartetMoEConfig",
    "QuartetMoEDecoderLayer",
    "QuartetMoEForCausalLM",
    "QuartetMoEModel",
    "QuartetMoEModelOutput",
    "QuartetMoEPreTrainedModel",
    "causal_lm_loss",
    "upcycle_dense_to_moe",
]
