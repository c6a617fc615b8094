"""DPO: preference tuning without a reward model (Rafailov et al., 2023).

Given a prompt x, a preferred response y_w and a rejected one y_l, DPO raises the policy's
log-likelihood ratio to a frozen reference model on y_w against the same ratio on y_l:

    h = (log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))
    loss = −log σ(β·h)

β sets how far the policy may drift from the reference: it is the strength of the KL
penalty that the closed form of RLHF's optimum turns into this loss. At the start the
policy is the reference, h = 0 and the loss is log 2. With label smoothing ε (conservative
DPO, for noisy preference labels) the loss is −(1 − ε)·log σ(β·h) − ε·log σ(−β·h).

With a LoRA policy the reference needs no second model: it is the same model with its
adapters switched off (llmhood.train.lora.adapters_disabled), computed once per batch
without gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmhood.errors import LLMHoodError


@dataclass
class DPOOutput:
    loss: torch.Tensor  # mean over the batch
    chosen_reward: torch.Tensor  # β·(log π − log π_ref) on y_w: (bs,), detached
    rejected_reward: torch.Tensor  # the same on y_l: (bs,), detached

    @property
    def accuracy(self) -> float:
        """Share of pairs whose chosen response the policy already prefers."""
        return (self.chosen_reward > self.rejected_reward).float().mean().item()


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> DPOOutput:
    """All inputs: summed log-probabilities of the responses, (bs,) each
    (llmhood.train.loss.sequence_logprob)."""
    if not beta > 0:
        raise LLMHoodError(f"DPO beta={beta} is invalid: it must be > 0 (0.1 is usual).")
    if not 0 <= label_smoothing < 0.5:
        raise LLMHoodError(f"DPO label_smoothing={label_smoothing} must be in [0, 0.5).")
    chosen = policy_chosen - reference_chosen  # (bs,)
    rejected = policy_rejected - reference_rejected
    logits = beta * (chosen - rejected)
    loss = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return DPOOutput(loss.mean(), beta * chosen.detach(), beta * rejected.detach())
