"""Quartet Top-P MoE causal LM, registered with transformers' Auto classes on import.

After ``import lightning_modules.components.moe_lm``, ``AutoConfig`` / ``AutoModel`` /
``AutoModelForCausalLM.from_pretrained(dir)`` load ``model_type="quartet_topp_moe"`` checkpoints.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration import QuartetMoEConfig
from .modeling import (
    QuartetMoECausalLMOutput,
    QuartetMoEDecoderLayer,
    QuartetMoEForCausalLM,
    QuartetMoEModel,
    QuartetMoEModelOutput,
    QuartetMoEPreTrainedModel,
    causal_lm_loss,
)
from .upcycle import SUPPORTED_DENSE_ARCHITECTURES, upcycle_dense_to_moe

AutoConfig.register(QuartetMoEConfig.model_type, QuartetMoEConfig, exist_ok=True)
AutoModel.register(QuartetMoEConfig, QuartetMoEModel, exist_ok=True)
AutoModelForCausalLM.register(QuartetMoEConfig, QuartetMoEForCausalLM, exist_ok=True)

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
