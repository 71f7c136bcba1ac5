"""Configuration of the Quartet Top-P MoE causal LM (a Llama-style decoder with MoE MLPs)."""

from __future__ import annotations

from transformers import PretrainedConfig

from ..moe.dispatch import DISPATCH_IMPLS
from ..moe.router import RouterConfig

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


class QuartetMoEConfig(PretrainedConfig):
    """Llama-style decoder (RMSNorm, RoPE, causal SDPA attention, optional GQA) whose MLPs are
    Top-P / top-k MoE layers (arXiv 2403.07652) in every ``moe_every_k``-th layer, dense SwiGLU
    elsewhere.

    MoE placement: layer ``i`` is MoE iff ``i % moe_every_k == 0`` (the paper's code: the first layer
    is always MoE; ``moe_every_k=1`` makes every layer MoE).

    Router fields map onto :class:`~models.moe.router.RouterConfig`:
    ``router_type`` ("top_p" | "top_k"), ``router_top_p`` (default 0.4), ``router_top_k``,
    ``min_experts``, ``max_experts``, ``router_renormalize`` (False = the paper's raw probabilities).
    (Not named ``top_p``/``top_k``: transformers treats those config keys as sampling parameters.)

    ``attention_window``: optional sliding-window size (Mistral-style), applied in every layer. It is
    deliberately not named ``sliding_window`` so that transformers' caches keep full layers (the window
    is applied through the attention mask).

    ``router_aux_loss_coef`` / ``router_dynamic_loss_coef`` / ``router_z_loss_coef`` are stored for the
    training module (alpha = 1e-2, beta = 1e-4 in the paper); ``forward`` never adds them to ``loss``.
    """

    model_type = "quartet_topp_moe"
    keys_to_ignore_at_inference = ["cache"]

    vocab_size: int = 32000
    hidden_size: int = 512
    intermediate_size: int = 1408
    moe_intermediate_size: int | None = None
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    rope_parameters: dict | None = None
    attention_bias: bool = False
    attention_output_bias: bool | None = None
    attention_dropout: float = 0.0
    attention_window: int | None = None
    use_cache: bool = True
    tie_word_embeddings: bool = False
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    num_experts: int = 8
    moe_every_k: int = 1
    router_type: str = "top_p"
    router_top_p: float = 0.4
    router_top_k: int = 2
    min_experts: int = 1
    max_experts: int | None = None
    router_renormalize: bool = False
    router_init_std: float | None = None
    moe_dispatch: str = "fused"
    router_aux_loss_coef: float = 1e-2
    router_dynamic_loss_coef: float = 1e-4
    router_z_loss_coef: float = 0.0

    def __post_init__(self, **kwargs) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.moe_intermediate_size is None:
            self.moe_intermediate_size = self.intermediate_size
        if self.attention_output_bias is None:
            self.attention_output_bias = self.attention_bias
        super().__post_init__(**kwargs)
        self.validate_quartet()

    @property
    def router_config(self) -> RouterConfig:
        """The router settings as a :class:`RouterConfig`."""
        return RouterConfig(
            kind=self.router_type,
            top_p=self.router_top_p,
            top_k=self.router_top_k,
            min_experts=self.min_experts,
            max_experts=self.max_experts,
            renormalize=self.router_renormalize,
        )

    @property
    def moe_layer_indices(self) -> list[int]:
        """Indices of the decoder layers whose MLP is an MoE layer."""
        return [i for i in range(self.num_hidden_layers) if self.is_moe_layer(i)]

    def is_moe_layer(self, layer_idx: int) -> bool:
        return layer_idx % self.moe_every_k == 0

    def validate_quartet(self) -> None:
        """Raise one ValueError listing every problem with this configuration."""
        problems = []
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "head_dim"):
            if getattr(self, name) is None or getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if (
            self.num_attention_heads
            and self.num_key_value_heads
            and (self.num_key_value_heads < 1 or self.num_attention_heads % self.num_key_value_heads)
        ):
            problems.append(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of num_key_value_heads "
                f"({self.num_key_value_heads})"
            )
        if self.moe_every_k < 1:
            problems.append(f"moe_every_k must be >= 1, got {self.moe_every_k}")
        if self.hidden_act != "silu":
            problems.append(f"hidden_act must be 'silu' (SwiGLU experts), got {self.hidden_act!r}")
        if self.moe_dispatch not in DISPATCH_IMPLS:
            problems.append(
                f"moe_dispatch must be one of {sorted(DISPATCH_IMPLS)}, got {self.moe_dispatch!r}"
            )
        if self.attention_window is not None and self.attention_window < 1:
            problems.append(f"attention_window must be >= 1 or None, got {self.attention_window}")
        rope_type = (self.rope_parameters or {}).get("rope_type", "default")
        if rope_type not in SUPPORTED_ROPE_TYPES:
            problems.append(
                f"rope_type {rope_type!r} is not supported; supported: {list(SUPPORTED_ROPE_TYPES)}"
            )
        try:
            self.router_config.validate(self.num_experts)
        except ValueError as err:
            problems.append(str(err))
        if problems:
            raise ValueError("Invalid QuartetMoEConfig: " + "; ".join(problems))
