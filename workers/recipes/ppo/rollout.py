"""What PPO reads off its models: the policy and value model as one module, the log-probabilities of sampled
tokens, the answers as the reward contract reads them, and one batch of rollouts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from workers.ml.generation import ended, until_eos


def positions(attention: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding."""
    return (attention.long().cumsum(1) - 1).clamp_min(0)


def response_logits(lm: nn.Module, ids: torch.Tensor, attention: torch.Tensor, width: int) -> torch.Tensor:
    """The logits that predict each of the last `width` tokens (the response)."""
    out = lm(input_ids=ids, attention_mask=attention, position_ids=positions(attention), logits_to_keep=width + 1)
    return out.logits[:, :-1]


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log p(token) under the tempered distribution the rollouts were sampled from, in fp32."""
    logits = logits.float() / temperature
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)


def read_answers(
    tokenizer: PreTrainedTokenizerBase, responses: torch.Tensor, ends: list[int] | None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Sampled responses as the reward contract reads them: (mask of the answer's tokens, up to and including
    its first end id; whether it ended; its text). Without end ids (stop_token=None) every sampled token is
    the answer's, which reads as cut."""
    if ends is None:
        mask, finished = torch.ones_like(responses, dtype=torch.bool), torch.zeros(len(responses), dtype=torch.bool)
    else:
        mask, finished = until_eos(responses, ends), ended(responses, ends)
    texts = tokenizer.batch_decode(responses.masked_fill(~mask, tokenizer.pad_token_id), skip_special_tokens=True)
    return mask, finished.to(responses.device), [t.strip() for t in texts]


class PolicyAndValue(nn.Module):
    """Policy and value model as one module, so one `accelerator.prepare` (one DDP wrapper) trains both."""

    def __init__(self, policy: PreTrainedModel, value_model: PreTrainedModel) -> None:
        super().__init__()
        self.policy, self.value_model = policy, value_model

    def forward(self, ids: torch.Tensor, attention: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(response logits, the value before each response token)."""
        backbone = getattr(self.value_model, self.value_model.base_model_prefix)
        hidden = backbone(input_ids=ids, attention_mask=attention, position_ids=positions(attention)).last_hidden_state
        values = self.value_model.score(hidden[:, -width - 1 : -1]).squeeze(-1)
        return response_logits(self.policy, ids, attention, width), values


@dataclass
class Rollout:
    """One batch of sampled answers and what PPO reads off them, [batch, response tokens] unless noted."""

    ids: torch.Tensor  # [batch, prompt + response]: left-padded prompt, then the response
    attention: torch.Tensor  # [batch, prompt + response]
    responses: torch.Tensor
    mask: torch.Tensor  # the answer's tokens, up to and including its EOS
    logprobs: torch.Tensor
    kl: torch.Tensor  # per-token KL to the reference (kl_estimator), 0 after the answer
    values: torch.Tensor
    scores: torch.Tensor  # [batch]: the reward contract's reading, cut answers penalised
    finished: torch.Tensor  # [batch]: ended with EOS within response_length
