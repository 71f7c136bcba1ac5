"""TopPMoEModule: the objective by hand, metrics against routing_stats, val accumulation, dense path,
config errors, checkpointing, upcycling from a dense HF checkpoint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from algorithms.losses.moe import routing_stats
from lightning_modules.topp_moe import RoutingStats, TopPMoEModule
from tests.helpers import compose_cfg
from utils.errors import ConfigError

# A smaller model than the shipped experiment, same code path.
SMALL = [
    "model.hidden_size=32",
    "model.num_layers=3",
    "model.num_heads=4",
    "model.num_kv_heads=2",
    "model.moe_intermediate_size=32",
    "model.intermediate_size=64",
    "model.num_experts=4",
    "model.router.init_std=0.5",  # a router with spread, so top-p keeps 1..4 experts
]


def make_module(tmp_path, overrides=(), experiment="moe_tiny_topp") -> TopPMoEModule:
    cfg = compose_cfg([f"experiment={experiment}", *overrides], tmp_path)
    torch.manual_seed(0)
    module = instantiate(cfg.module)
    module.configure_model()
    return module


def batch(vocab=1024, b=3, s=12, pad_first=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[0, -pad_first:] = 0  # right padding in row 0
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def by_hand(model, bt, alpha, beta, z=0.0):
    """L_lm + alpha * mean_l N sum_i f_i Q_i + beta * mean_l H(P) (+ z * mean_l lse^2), over real tokens."""
    out = model(input_ids=bt["input_ids"], attention_mask=bt["attention_mask"])
    logits = out.logits
    lm = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), bt["labels"][:, 1:].reshape(-1), ignore_index=-100
    )
    real = bt["attention_mask"].reshape(-1).bool()
    bal, dyn, zl = [], [], []
    for aux in out.router_aux:
        logit = aux.router_logits[real]
        p = torch.softmax(logit.double(), -1)
        m = aux.dispatch_mask[real].double()
        n = p.shape[-1]
        f = m.sum(0) / m.sum()
        bal.append(n * (f * p.mean(0)).sum())
        dyn.append((-(p * p.log()).sum(-1)).mean())
        zl.append(torch.logsumexp(logit.double(), -1).pow(2).mean())
    aux = alpha * torch.stack(bal).mean() + beta * torch.stack(dyn).mean() + z * torch.stack(zl).mean()
    return lm, aux, out


@pytest.mark.parametrize("z", [0.0, 1e-3])
def test_total_loss_is_lm_plus_alpha_balance_plus_beta_dynamic(tmp_path, z):
    module = make_module(tmp_path, [*SMALL, f"module.z_loss_coef={z}"])
    assert (module.alpha, module.beta) == (1e-2, 1e-4)  # the paper's defaults, from conf/module/topp_moe.yaml
    bt = batch()
    step = module.compute_loss(bt)
    lm, aux, out = by_hand(module.model, bt, 1e-2, 1e-4, z)
    torch.testing.assert_close(step.lm_loss, lm)
    torch.testing.assert_close(step.aux_loss.double(), aux, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(step.loss.double(), (lm + aux).double(), rtol=1e-6, atol=1e-6)
    assert len(step.aux) == 3 and step.aux[0].token_mask.sum() == 3 * 12 - 4  # padding left out
    # The aux term alone reaches every router.
    step.aux_loss.backward()
    for layer in module.model.model.layers:
        assert layer.mlp.router.weight.grad.abs().sum() > 0


def test_train_metrics_are_routing_stats_per_layer(tmp_path):
    module = make_module(tmp_path, SMALL)
    bt = batch()
    step = module.compute_loss(bt)
    metrics = module.train_metrics(step)
    assert {"train/loss", "train/lm_loss", "train/ppl", "moe/experts_per_token", "moe/balance_loss"} <= set(
        metrics
    )
    torch.testing.assert_close(metrics["train/ppl"], torch.exp(step.lm_loss.detach()))
    ks = []
    for aux in step.aux:
        s = routing_stats(aux.router_probs, aux.dispatch_mask, aux.token_mask, aux.router_logits)
        name = f"moe/layer{aux.layer_idx}"
        assert metrics[f"{name}/experts_per_token"] == s["experts_per_token"]
        assert metrics[f"{name}/router_entropy"] == s["router_entropy"]
        assert metrics[f"{name}/activated_ratio_vs_top2"] == s["experts_per_token"] / 2
        assert metrics[f"{name}/load_imbalance"] == s["load_imbalance"]
        for e in range(4):
            assert metrics[f"{name}/tokens_per_expert/e{e}"] == s["tokens_per_expert"][e]
        hist = s["experts_per_token_hist"].float()
        for k in range(1, 5):
            assert metrics[f"{name}/experts_hist/k{k}"] == hist[k] / hist.sum()
        ks.append(float(s["experts_per_token"]))
    assert float(metrics["moe/experts_per_token"]) == pytest.approx(sum(ks) / len(ks))
    assert len({round(k, 3) for k in ks}) > 1 or 1 < ks[0] < 4  # top-p: a variable number of experts


def test_val_routing_stats_over_batches_equal_stats_of_all_tokens(tmp_path):
    module = make_module(tmp_path, SMALL)
    b1, b2 = batch(seed=1), batch(seed=2, pad_first=7)
    metric = RoutingStats([0, 1, 2], 4)
    with torch.no_grad():
        s1, s2 = module.compute_loss(b1), module.compute_loss(b2)
    metric.update(s1.aux)
    metric.update(s2.aux)
    got = metric.compute()
    for pos in range(3):
        a1, a2 = s1.aux[pos], s2.aux[pos]
        s = routing_stats(
            torch.cat([a1.router_probs, a2.router_probs]),
            torch.cat([a1.dispatch_mask, a2.dispatch_mask]),
            torch.cat([a1.token_mask, a2.token_mask]),
            torch.cat([a1.router_logits, a2.router_logits]),
        )
        torch.testing.assert_close(got[f"layer{pos}/experts_per_token"], s["experts_per_token"])
        torch.testing.assert_close(got[f"layer{pos}/router_entropy"], s["router_entropy"])
        for e in range(4):
            assert got[f"layer{pos}/tokens_per_expert/e{e}"] == s["tokens_per_expert"][e]
    mean_k = torch.stack([got[f"layer{i}/experts_per_token"] for i in range(3)]).mean()
    torch.testing.assert_close(got["experts_per_token"], mean_k)


def test_dense_model_runs_through_the_same_module_with_no_aux(tmp_path):
    module = make_module(tmp_path, ["model.hidden_size=32", "model.num_layers=2"], experiment="dense_tiny")
    assert module.moe_layout() is None and module.val_routing is None
    bt = batch()
    step = module.compute_loss(bt)
    assert step.aux == [] and float(step.aux_loss) == 0.0
    torch.testing.assert_close(step.loss, step.lm_loss)
    assert set(module.train_metrics(step)) == {"train/loss", "train/lm_loss", "train/ppl"}


def test_sweep_path_reaches_the_router_and_the_exported_config(tmp_path):
    module = make_module(tmp_path, [*SMALL, "model.router.top_p=0.2", "module.balance_coef=0.05"])
    cfg = module.model.config
    assert cfg.router_top_p == 0.2 and cfg.router_type == "top_p" and not cfg.router_renormalize
    assert module.model.model.layers[0].mlp.router.config.top_p == 0.2
    assert cfg.router_aux_loss_coef == 0.05 and cfg.router_dynamic_loss_coef == 1e-4
    top2 = make_module(tmp_path, SMALL, experiment="moe_tiny_top2").model.config
    assert (top2.router_type, top2.router_top_k, top2.router_renormalize) == ("top_k", 2, True)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.router.top_p=1.5"], "top_p must be in"),
        (["+model.router.temperature=2"], "unknown key"),
        (["module.balance_coef=-1"], "module.balance_coef=-1 must be >= 0"),
        (["model.dispatch=magic"], "moe_dispatch must be one of"),
    ],
)
def test_bad_config_fails_at_module_construction(tmp_path, overrides, message):
    cfg = compose_cfg(["experiment=moe_tiny_topp", *overrides], tmp_path)
    with pytest.raises(InstantiationException) as e:
        instantiate(cfg.module)
    # train.py prints a ConfigError raised by a _target_ as one `error:` line (exit status 2).
    assert isinstance(e.value.__cause__, ConfigError) and message in str(e.value.__cause__)


def test_activation_checkpointing_gives_the_same_loss_and_gradients(tmp_path):
    grads = []
    for ckpt in ("false", "true"):
        module = make_module(tmp_path, [*SMALL, f"model.gradient_checkpointing={ckpt}"])
        module.model.train()
        step = module.compute_loss(batch())
        step.loss.backward()
        grads.append((step.loss.detach(), {n: p.grad.clone() for n, p in module.model.named_parameters()}))
    (l0, g0), (l1, g1) = grads
    assert module.model.is_activation_checkpointing
    torch.testing.assert_close(l0, l1)
    for name in g0:
        torch.testing.assert_close(g0[name], g1[name], msg=name)


def test_upcycled_dense_checkpoint_starts_from_the_dense_function(tmp_path, tiny_hf_dir):
    from transformers import AutoModelForCausalLM

    module = make_module(
        tmp_path,
        [
            "model=moe_upcycle",
            f"model.pretrained={tiny_hf_dir}",
            "model.num_experts=4",
            "model.router.kind=top_k",
            "model.router.top_k=2",
            "model.router.renormalize=true",  # combine weights sum to 1: sum_e w_e MLP(x) = MLP(x)
        ],
    )
    dense = AutoModelForCausalLM.from_pretrained(tiny_hf_dir).eval()
    bt = batch(vocab=dense.config.vocab_size)
    module.model.eval()
    with torch.no_grad():
        want = dense(input_ids=bt["input_ids"], attention_mask=bt["attention_mask"]).logits
        got = module.model(input_ids=bt["input_ids"], attention_mask=bt["attention_mask"]).logits
    real = bt["attention_mask"].bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-4)
    assert module.model.config.num_experts == 4 and module.moe_layout() == ([0, 1], 4)


def test_upcycle_without_a_checkpoint_names_the_fix(tmp_path):
    cfg = compose_cfg(["experiment=moe_tiny_topp", "model=moe_upcycle", "model.pretrained=null"], tmp_path)
    with pytest.raises(InstantiationException) as e:
        instantiate(cfg.module)
    assert "model.pretrained must name a dense" in str(e.value.__cause__)
