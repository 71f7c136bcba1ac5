"""Top-P / top-k Mixture-of-Experts components (pure PyTorch; arXiv 2403.07652).

The slow all-experts test oracle is ``models/moe/dispatch_oracle.py`` (not exported here).
"""

from .dispatch import (
    DEFAULT_DISPATCH,
    DISPATCH_IMPLS,
    DispatchPlan,
    available_dispatch_impls,
    moe_dispatch,
    plan_dispatch,
)
from .layer import MoEAux, MoELayer, SwiGLUExperts, SwiGLUMLP
from .router import (
    Router,
    RouterConfig,
    RouterOutput,
    TopKRouter,
    TopPRouter,
    build_router,
    top_k_mask,
    top_p_mask,
)

__all__ = [
    "DEFAULT_DISPATCH",
    "DISPATCH_IMPLS",
    "DispatchPlan",
    "MoEAux",
    "MoELayer",
    "Router",
    "RouterConfig",
    "RouterOutput",
    "SwiGLUExperts",
    "SwiGLUMLP",
    "TopKRouter",
    "TopPRouter",
    "available_dispatch_impls",
    "build_router",
    "moe_dispatch",
    "plan_dispatch",
    "top_k_mask",
    "top_p_mask",
]
