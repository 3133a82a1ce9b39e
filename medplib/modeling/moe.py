"""Mixture-of-experts FFN: per-token top-1 routing over LLaMA-shaped SwiGLU experts.

Behaviour follows DeepSpeed's `MoE` layer as configured by MedPLIB (2 experts, top-1,
`use_residual=False`), implemented natively:

- router: bias-free Linear(D → E) run in fp32, softmax over experts, argmax per token; its
  weights are stored in fp32 or, with `router_dtype="model"`, in the model's dtype;
- capacity: ceil(tokens / E × factor), `capacity_factor` in training, `eval_capacity_factor`
  in eval; tokens beyond an expert's capacity (in sequence order) are dropped, i.e. output 0
  so only the residual connection carries them;
- combine: the chosen expert's output × its router probability (`scale_by_router_prob`), or
  × p / stop_gradient(p) = 1 with the same router gradient (`straight_through_router`).

Each module returns a plain tensor (so it drops into a transformers decoder layer) and keeps
the routing of its last call in `last_routing`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP

from medplib.modeling.configuration import MoEConfig


def load_balancing_loss(
    router_probs: torch.Tensor, expert_index: torch.Tensor, num_experts: int
) -> torch.Tensor:
    """Switch-Transformer balance loss: E · Σ_e mean(p_e) · fraction of tokens routed to e.

    router_probs (N, E) fp32, expert_index (N,) long (the argmax, before capacity drops).
    Equals 1.0 for perfectly uniform routing and grows towards E when one expert takes all.
    """
    if router_probs.numel() == 0:
        return router_probs.new_zeros(())
    mean_prob = router_probs.mean(dim=0)  # (E,)
    frac = F.one_hot(expert_index, num_experts).float().mean(dim=0)  # (E,)
    return num_experts * (mean_prob * frac).sum()


def top1_dispatch(expert_index: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """(N,) expert per token → (N,) bool, True where the token fits its expert's capacity.

    Tokens claim slots in sequence order, so the first `capacity` tokens of each expert stay.
    """
    onehot = F.one_hot(expert_index, num_experts)  # (N, E)
    slot = (onehot.cumsum(dim=0) * onehot).sum(dim=-1) - 1  # (N,) 0-based slot in its expert
    return slot < capacity


@dataclass
class RoutingRecord:
    """Routing of one MoE layer in its last forward call."""

    expert_index: torch.Tensor  # (B, T) long: chosen expert per token
    router_probs: torch.Tensor  # (B, T, E) fp32, detached
    kept: torch.Tensor  # (B, T) bool: False where the token was dropped for capacity
    aux_loss: torch.Tensor  # () fp32 load-balancing loss, differentiable

    def expert_share(self) -> list[float]:
        """Share of this call's tokens routed to each expert (before capacity drops)."""
        counts = torch.bincount(
            self.expert_index.reshape(-1), minlength=self.router_probs.shape[-1]
        )
        total = max(int(counts.sum()), 1)
        return [int(c) / total for c in counts.tolist()]


class MoEFeedForward(nn.Module):
    """Drop-in replacement for `LlamaMLP` with `num_experts` SwiGLU experts and a top-1 router."""

    def __init__(self, llama_config: LlamaConfig, moe_config: MoEConfig) -> None:
        super().__init__()
        self.moe_config = moe_config
        self.num_experts = moe_config.num_experts
        # "fp32" pins the router weights to fp32; "model" creates and casts them with the model.
        self.router = nn.Linear(
            llama_config.hidden_size,
            self.num_experts,
            bias=False,
            dtype=torch.float32 if moe_config.router_dtype == "fp32" else None,
        )
        self.experts = nn.ModuleList(LlamaMLP(llama_config) for _ in range(self.num_experts))
        self.last_routing: RoutingRecord | None = None

    def _apply(self, fn, recurse=True):
        # With router_dtype "fp32" the weights stay fp32 (as DeepSpeed builds its gate) even in
        # a bf16 model; with "model" they follow the model's cast, as in the official bf16 eval.
        if self.moe_config.router_dtype != "fp32":
            return super()._apply(fn, recurse)
        before = self.router.weight.data  # fp32 values, kept so a cast does not round them
        super()._apply(fn, recurse)
        weight = self.router.weight
        if weight.dtype != torch.float32:
            weight.data = before.to(device=weight.device, dtype=torch.float32)
            self.router.float()  # and its gradient, if any
        return self

    def route(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, D) → (N, E) router logits, computed in fp32 whatever the weights' dtype
        (DeepSpeed's gate upcasts its input and weights the same way)."""
        return F.linear(flat.float(), self.router.weight.float())

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, D) → (B, T, D)."""
        b, t, d = hidden.shape
        flat = hidden.reshape(b * t, d)  # (N, D)
        probs = self.route(flat).softmax(dim=-1)  # (N, E)
        top_prob, expert_index = probs.max(dim=-1)  # (N,), (N,)
        if self.moe_config.straight_through_router:
            top_prob = top_prob / top_prob.detach()  # == 1 exactly; d/dp = 1 / p
        capacity = self.moe_config.capacity(b * t, self.training)
        kept = top1_dispatch(expert_index, self.num_experts, capacity)  # (N,)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            rows = torch.nonzero((expert_index == e) & kept).squeeze(-1)  # (n_e,)
            if rows.numel() == 0:
                continue
            y = expert(flat[rows])  # (n_e, D)
            if self.moe_config.scale_by_router_prob:
                y = y * top_prob[rows].to(y.dtype).unsqueeze(-1)
            out.index_copy_(0, rows, y)  # in place: no copy of the whole output per expert
        self.last_routing = RoutingRecord(
            expert_index=expert_index.view(b, t).detach(),
            router_probs=probs.view(b, t, -1).detach(),
            kept=kept.view(b, t),
            # The balancing loss only matters for training; inference skips its cost.
            aux_loss=load_balancing_loss(probs, expert_index, self.num_experts)
            if self.training
            else probs.new_zeros(()),
        )
        return out.view(b, t, d)
