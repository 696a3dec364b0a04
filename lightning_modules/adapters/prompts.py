"""Soft prompts, DePT and ADePT input offsets, and a wrapper that puts them in front of a frozen
Hugging Face backbone. Plain PyTorch: nothing here imports Lightning.

Notation: B batch, L input tokens, m soft-prompt tokens, d hidden size, r offset rank.

- Prompt tuning (PT): m trainable vectors ``P`` (m × d) are inserted before the token
  embeddings ``E`` (B × L × d): ``[P; E]``.
- DePT: a shorter prompt plus a position-based low-rank offset ``E' = E + A[pos] B`` with
  ``A`` (L_max × r) and ``B`` (r × d, zeros at start). The offset depends on the token's position
  only, so every input of a given length gets the same offset.
- ADePT: a shorter prompt plus a token-shared feed-forward offset
  ``E' = E + ReLU(E W1 + b1) W2 + b2`` with ``W1`` d × r, ``W2`` r × d, ``b2`` d; ``W2`` and ``b2``
  start at zero, so the offset starts at 0. The offset never touches the soft prompt.

Both offsets are multiplied by the attention mask, so padding embeddings stay unchanged and
padding does not change what the model computes for the real tokens.

Backbones (:class:`PromptedModel`):

- ``encoder_decoder`` (T5): the prompt goes before the encoder input only.
- ``decoder_only`` (Llama, GPT-2 ...): the prompt goes right before the first real token,
  after any left padding; position ids restart at 0 at the prompt, and the prompt positions
  get label -100. Generation injects the prompt in the first step only, while the KV cache
  is empty.
- ``encoder_classifier`` (BERT with a classification head): the prompt goes right after the
  first token (``[CLS]``), so the head still pools ``[CLS]``. The head trains with the prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

IGNORE_INDEX = -100
BACKBONE_KINDS = ("encoder_decoder", "decoder_only", "encoder_classifier")
PROMPT_INITS = ("text", "vocabulary", "random")


class SoftPrompt(nn.Module):
    """Trainable prompt vectors ``P`` of shape (m, d).

    Args:
        length: Number of prompt tokens m.
        hidden_size: Embedding size d of the backbone.
    """

    def __init__(self, length: int, hidden_size: int) -> None:
        super().__init__()
        if length < 0:
            raise ValueError(f"prompt length must be >= 0, got {length}.")
        self.embeddings = nn.Parameter(torch.zeros(length, hidden_size))

    @property
    def length(self) -> int:
        return self.embeddings.shape[0]

    @torch.no_grad()
    def initialize_from_tokens(self, embedding_weight: torch.Tensor, token_ids: list[int]) -> None:
        """Copy the embeddings of ``token_ids`` into the prompt, cycling the ids to length m.

        Args:
            embedding_weight: The backbone's input embedding matrix, (V, d).
            token_ids: Ids of a tokenised initialisation text.
        """
        if not token_ids:
            raise ValueError("the prompt initialisation text has no tokens; give a non-empty prompt_init_text.")
        cycled = [token_ids[i % len(token_ids)] for i in range(self.length)]
        index = torch.tensor(cycled, dtype=torch.long, device=embedding_weight.device)
        self.embeddings.copy_(embedding_weight[index].to(self.embeddings.dtype))

    @torch.no_grad()
    def initialize_from_vocabulary(self, embedding_weight: torch.Tensor, seed: int = 0, max_token_id: int = 5000) -> None:
        """Copy the embeddings of m token ids drawn uniformly from ``[0, max_token_id)``.

        T5's SentencePiece vocabulary lists pieces roughly by frequency, so the draw is
        restricted to the first ``max_token_id`` rows.

        NOTE: in BERT's WordPiece vocabulary ids below about 1,000 are special, unused and
        single-character tokens, so there a draw includes those rows too.
        """
        high = min(max_token_id, embedding_weight.shape[0])
        generator = torch.Generator().manual_seed(seed)
        index = torch.randint(0, high, (self.length,), generator=generator).to(embedding_weight.device)
        self.embeddings.copy_(embedding_weight[index].to(self.embeddings.dtype))

    @torch.no_grad()
    def initialize_random(self, std: float = 0.5, seed: int = 0) -> None:
        """Draw the prompt from N(0, std²)."""
        generator = torch.Generator().manual_seed(seed)
        values = torch.randn(self.embeddings.shape, generator=generator) * std
        self.embeddings.copy_(values.to(self.embeddings))

    def forward(self, batch_size: int) -> torch.Tensor:
        """Return the prompt repeated over the batch, (B, m, d)."""
        return self.embeddings.unsqueeze(0).expand(batch_size, -1, -1)


def token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Return each token's index among the real tokens of its row, (B, L); padding gets 0."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


class DePTOffset(nn.Module):
    """DePT's position-based low-rank offset ``A[pos] B`` added to the token embeddings.

    Args:
        max_length: Maximum input length L; rows of ``A`` exist for positions 0 .. L-1.
        hidden_size: Embedding size d.
        rank: Rank r.

    Trainable parameters: ``r * (L + d)``.
    """

    def __init__(self, max_length: int, hidden_size: int, rank: int) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"DePT rank must be >= 1, got {rank}; raise the budget or shorten the prompt.")
        self.max_length = max_length
        self.lora_embedding_A = nn.Parameter(torch.empty(max_length, rank))
        self.lora_embedding_B = nn.Parameter(torch.zeros(rank, hidden_size))
        nn.init.kaiming_uniform_(self.lora_embedding_A, a=math.sqrt(5))

    def forward(
        self, embeddings: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Add the offset to the real tokens of ``embeddings``.

        Args:
            embeddings: Token embeddings, (B, L, d).
            attention_mask: 1 for real tokens, 0 for padding, (B, L).
            positions: Position of each token among the real tokens, (B, L). Defaults to
                :func:`token_positions` of the mask, which makes the offset independent of
                whether the batch is left or right padded.

        Raises:
            ValueError: If a position is at or beyond ``max_length``.
        """
        if positions is None:
            positions = token_positions(attention_mask)
        longest = int(positions.max()) + 1 if positions.numel() else 0
        if longest > self.max_length:
            raise ValueError(
                f"input has {longest} tokens but the DePT offset covers max_length={self.max_length} positions; "
                f"truncate inputs (data max_length) or raise the model's max_length."
            )
        offset = self.lora_embedding_A[positions] @ self.lora_embedding_B  # (B, L, d)
        return embeddings + offset.to(embeddings.dtype) * attention_mask.unsqueeze(-1).to(embeddings.dtype)


class ADePTOffset(nn.Module):
    """ADePT's token-shared feed-forward offset ``ReLU(E W1 + b1) W2 + b2``.

    Args:
        hidden_size: Embedding size d.
        rank: Hidden width r of the feed-forward network.
        dropout: Dropout on the hidden layer while training.

    Trainable parameters: ``r * (2 d + 1) + d``. ``W1`` is Kaiming-uniform and ``b1``, ``W2``,
    ``b2`` are zero, so the offset is exactly 0 at initialisation.
    """

    def __init__(self, hidden_size: int, rank: int, dropout: float = 0.1) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"ADePT rank must be >= 1, got {rank}; raise the budget or shorten the prompt.")
        self.up = nn.Linear(hidden_size, rank)
        self.dropout = nn.Dropout(dropout)
        self.down = nn.Linear(rank, hidden_size)
        nn.init.kaiming_uniform_(self.up.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.bias)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def forward(
        self, embeddings: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Add the offset to the real tokens of ``embeddings`` (B, L, d); ``positions`` is unused."""
        hidden = self.dropout(torch.relu(self.up(embeddings)))  # (B, L, r)
        offset = self.down(hidden)  # (B, L, d)
        return embeddings + offset * attention_mask.unsqueeze(-1).to(embeddings.dtype)


def prompt_parameter_count(prompt_length: int, hidden_size: int) -> int:
    """Trainable values of a soft prompt: ``m * d``."""
    return prompt_length * hidden_size


def dept_parameter_count(prompt_length: int, rank: int, max_length: int, hidden_size: int) -> int:
    """Trainable values of DePT: ``m * d + r * (L + d)``."""
    return prompt_length * hidden_size + rank * (max_length + hidden_size)


def adept_parameter_count(prompt_length: int, rank: int, hidden_size: int) -> int:
    """Trainable values of ADePT: ``m * d + r * (2 d + 1) + d``."""
    return prompt_length * hidden_size + rank * (2 * hidden_size + 1) + hidden_size


@dataclass(frozen=True)
class PromptBudget:
    """The largest DePT and ADePT ranks that fit a budget, and what they cost.

    Attributes:
        budget: Trainable values allowed.
        prompt_length: Prompt tokens m of DePT and ADePT.
        dept_rank: Largest r with ``m d + r (L + d) <= budget``.
        dept_parameters: DePT's trainable values at that rank.
        adept_rank: Largest r with ``m d + r (2 d + 1) + d <= budget``.
        adept_parameters: ADePT's trainable values at that rank.
    """

    budget: int
    prompt_length: int
    dept_rank: int
    dept_parameters: int
    adept_rank: int
    adept_parameters: int


def solve_prompt_budget(
    hidden_size: int, prompt_length: int, max_length: int, budget: int | None = None, budget_tokens: int = 100
) -> PromptBudget:
    """Pick the largest DePT and ADePT ranks whose parameter counts fit a budget.

    Args:
        hidden_size: Embedding size d.
        prompt_length: Prompt tokens m of DePT and ADePT.
        max_length: Maximum input length L (DePT's ``A`` has L rows).
        budget: Trainable values allowed. Defaults to ``budget_tokens * d``.
        budget_tokens: Budget in prompt tokens' worth when ``budget`` is None.

    Raises:
        ValueError: If the prompt alone leaves no room for a rank-1 offset.
    """
    if budget is None:
        budget = budget_tokens * hidden_size
    remaining = budget - prompt_parameter_count(prompt_length, hidden_size)
    dept_rank = remaining // (max_length + hidden_size)
    adept_rank = (remaining - hidden_size) // (2 * hidden_size + 1)
    if dept_rank < 1 or adept_rank < 1:
        raise ValueError(
            f"a budget of {budget:,} values leaves {remaining:,} after a {prompt_length}-token prompt of width "
            f"{hidden_size}, too little for a rank-1 offset; shorten the prompt or raise the budget."
        )
    return PromptBudget(
        budget=budget,
        prompt_length=prompt_length,
        dept_rank=dept_rank,
        dept_parameters=dept_parameter_count(prompt_length, dept_rank, max_length, hidden_size),
        adept_rank=adept_rank,
        adept_parameters=adept_parameter_count(prompt_length, adept_rank, hidden_size),
    )


def infer_backbone_kind(backbone: nn.Module) -> str:
    """Return ``encoder_decoder``, ``decoder_only`` or ``encoder_classifier`` for a Hugging Face model.

    Raises:
        ValueError: If the model is none of the three (e.g. a bare encoder without a head).
    """
    config = getattr(backbone, "config", None)
    name = type(backbone).__name__
    if config is not None and getattr(config, "is_encoder_decoder", False):
        return "encoder_decoder"
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "decoder_only"
    if name.endswith("ForSequenceClassification"):
        return "encoder_classifier"
    raise ValueError(
        f"cannot tell how to prompt a {name}; pass kind as one of {BACKBONE_KINDS}, or load the model "
        f"with a language-model or sequence-classification head."
    )


def max_position_count(backbone: nn.Module) -> int | None:
    """Return the backbone's maximum sequence length, or None for relative positions (T5)."""
    config = getattr(backbone, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return None
    return getattr(config, "max_position_embeddings", None)


def append_targets(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, target_ids: torch.Tensor, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Join source and target tokens row by row for a decoder-only model.

    Args:
        input_ids: Right-padded source tokens, (B, S).
        attention_mask: Source mask, (B, S).
        target_ids: Target tokens padded with -100, (B, T).
        pad_token_id: Id written into padding.

    Returns:
        ``(input_ids, attention_mask, labels)``, each (B, S + T) and right padded; labels are
        -100 on the source and on padding.
    """
    batch_size = input_ids.shape[0]
    width = input_ids.shape[1] + target_ids.shape[1]
    joined = input_ids.new_full((batch_size, width), pad_token_id)
    mask = attention_mask.new_zeros((batch_size, width))
    labels = input_ids.new_full((batch_size, width), IGNORE_INDEX)
    for row in range(batch_size):
        source = input_ids[row][attention_mask[row].bool()]
        target = target_ids[row][target_ids[row] != IGNORE_INDEX]
        length = source.numel() + target.numel()
        joined[row, :length] = torch.cat([source, target])
        mask[row, :length] = 1
        labels[row, source.numel():length] = target
    return joined, mask, labels


class PromptedModel(nn.Module):
    """A frozen Hugging Face backbone behind a soft prompt and an optional input offset.

    Args:
        backbone: A Hugging Face model. Its parameters are frozen here, except the
            classification head of an ``encoder_classifier`` (``head_module``).
        soft_prompt: The soft prompt (m may be 0 for an offset-only model).
        offset: A :class:`DePTOffset`, an :class:`ADePTOffset` or None (prompt tuning).
        kind: One of ``BACKBONE_KINDS``; None infers it from the model class.
        max_length: Longest input the data may give; with the prompt it must fit the
            backbone's maximum sequence length.
        head_module: Attribute name of the classification head that trains
            (``encoder_classifier`` only).
        backbone_dropout: Keep the backbone's dropout active in training mode. By default the
            frozen backbone stays in eval mode, so only the offset's dropout is random.

    Raises:
        ValueError: If ``m + max_length`` exceeds the backbone's maximum sequence length.
    """

    def __init__(
        self,
        backbone: nn.Module,
        soft_prompt: SoftPrompt,
        offset: nn.Module | None = None,
        kind: str | None = None,
        max_length: int | None = None,
        head_module: str = "classifier",
        backbone_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.kind = kind or infer_backbone_kind(backbone)
        if self.kind not in BACKBONE_KINDS:
            raise ValueError(f"unknown backbone kind {self.kind!r}; choose one of {BACKBONE_KINDS}.")
        self.backbone = backbone
        self.soft_prompt = soft_prompt
        self.offset = offset
        self.backbone_dropout = backbone_dropout
        self.max_positions = max_position_count(backbone)
        if max_length is not None:
            self.check_length(max_length)
        backbone.requires_grad_(False)
        if self.kind == "encoder_classifier":
            head = getattr(backbone, head_module, None)
            if head is None:
                raise ValueError(f"{type(backbone).__name__} has no head module {head_module!r} to train.")
            head.requires_grad_(True)

    def train(self, mode: bool = True) -> PromptedModel:
        super().train(mode)
        if not self.backbone_dropout:
            self.backbone.eval()
        return self

    def check_length(self, length: int) -> None:
        """Raise ValueError if ``length`` tokens plus the prompt exceed the backbone's maximum length."""
        if self.max_positions is not None and length + self.soft_prompt.length > self.max_positions:
            raise ValueError(
                f"a prompt of {self.soft_prompt.length} tokens plus inputs of {length} tokens needs "
                f"{length + self.soft_prompt.length} positions, but the model's maximum length is "
                f"{self.max_positions}; lower max_length to at most {self.max_positions - self.soft_prompt.length} "
                f"or shorten the prompt."
            )

    def input_embeddings(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Embed tokens and add the offset (if any), (B, L) -> (B, L, d)."""
        embeddings = self.backbone.get_input_embeddings()(input_ids)
        if self.offset is not None:
            embeddings = self.offset(embeddings, attention_mask, positions)
        return embeddings

    def _insert_prompt(self, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size = embeddings.shape[0]
        prompt = self.soft_prompt(batch_size).to(embeddings.dtype)  # (B, m, d)
        prompt_mask = attention_mask.new_ones((batch_size, self.soft_prompt.length))
        if self.kind == "encoder_classifier":  # keep [CLS] first for the pooler
            embeddings = torch.cat([embeddings[:, :1], prompt, embeddings[:, 1:]], dim=1)
            attention_mask = torch.cat([attention_mask[:, :1], prompt_mask, attention_mask[:, 1:]], dim=1)
        else:
            embeddings = torch.cat([prompt, embeddings], dim=1)
            attention_mask = torch.cat([prompt_mask, attention_mask], dim=1)
        return embeddings, attention_mask

    def _decoder_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Prompted decoder inputs, left padded: ``[pad ... pad, P, tokens]``.

        Sorting each row by its mask (stable) moves every padding slot to the front and keeps
        the prompt and the real tokens in order, so left- and right-padded batches give the
        same sequence.
        """
        embeddings = self.input_embeddings(input_ids, attention_mask)
        embeddings, mask = self._insert_prompt(embeddings, attention_mask)  # (B, m + L, d)
        order = torch.argsort(mask, dim=1, stable=True)  # (B, m + L)
        embeddings = embeddings.gather(1, order.unsqueeze(-1).expand_as(embeddings))
        mask = mask.gather(1, order)
        position_ids = token_positions(mask)
        if labels is not None:
            prompt_labels = labels.new_full((labels.shape[0], self.soft_prompt.length), IGNORE_INDEX)
            labels = torch.cat([prompt_labels, labels], dim=1).gather(1, order)
            labels = labels.masked_fill(mask == 0, IGNORE_INDEX)
        return embeddings, mask, position_ids, labels

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None, **kwargs):
        """Run the backbone on prompted inputs and return its Hugging Face output.

        Args:
            input_ids: Tokens, (B, L).
            attention_mask: 1 for real tokens, (B, L).
            labels: ``encoder_decoder``: target tokens (B, T) with -100 padding.
                ``decoder_only``: labels aligned with ``input_ids`` (B, L), -100 where no loss.
                ``encoder_classifier``: class ids (B,) or regression scores (B,).
            **kwargs: Passed to the backbone (e.g. ``decoder_input_ids``).
        """
        self.check_length(input_ids.shape[1])
        if self.kind == "decoder_only":
            embeddings, mask, position_ids, labels = self._decoder_inputs(input_ids, attention_mask, labels)
            return self.backbone(inputs_embeds=embeddings, attention_mask=mask, position_ids=position_ids, labels=labels, **kwargs)
        embeddings = self.input_embeddings(input_ids, attention_mask)
        embeddings, mask = self._insert_prompt(embeddings, attention_mask)
        if self.kind == "encoder_classifier":
            token_type_ids = torch.zeros_like(mask)
            return self.backbone(inputs_embeds=embeddings, attention_mask=mask, token_type_ids=token_type_ids, labels=labels, **kwargs)
        return self.backbone(inputs_embeds=embeddings, attention_mask=mask, labels=labels, **kwargs)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | None = None,
        pad_token_id: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate greedily from prompted inputs.

        Args:
            input_ids: Source tokens, (B, L), left or right padded.
            attention_mask: Source mask, (B, L).
            max_new_tokens: Tokens to generate at most.
            eos_token_id: Generation of a row stops after this token.
            pad_token_id: Written after a row has finished.

        Returns:
            ``(tokens, scores)``: new tokens (B, N) without the decoder start token, and the
            logits that chose them, (B, N, V).
        """
        if self.kind == "encoder_classifier":
            raise NotImplementedError("an encoder_classifier backbone has no generation; use forward() logits.")
        self.check_length(input_ids.shape[1])
        if self.kind == "encoder_decoder":
            embeddings = self.input_embeddings(input_ids, attention_mask)
            embeddings, mask = self._insert_prompt(embeddings, attention_mask)
            encoder_outputs = self.backbone.get_encoder()(inputs_embeds=embeddings, attention_mask=mask)
            start = self.backbone.config.decoder_start_token_id
            decoder_input_ids = input_ids.new_full((input_ids.shape[0], 1), start)
            return self._greedy(
                lambda tokens, past, step: self.backbone(
                    encoder_outputs=encoder_outputs,
                    attention_mask=mask,
                    decoder_input_ids=tokens,
                    cache=past,
                    use_cache=True,
                ),
                decoder_input_ids, max_new_tokens, eos_token_id, pad_token_id,
            )
        return self._decoder_generate(input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id)

    def _decoder_generate(self, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id):
        embeddings, mask, position_ids, _ = self._decoder_inputs(input_ids, attention_mask, None)
        # Sequence positions of generated tokens, for DePT's position offset.
        next_token_position = attention_mask.long().sum(dim=1, keepdim=True)  # (B, 1)
        state = {"mask": mask, "position": position_ids[:, -1:]}

        def step_model(tokens, past, step):
            if step == 0:  # the KV cache is empty: feed the prompt and the source
                return self.backbone(inputs_embeds=embeddings, attention_mask=mask, position_ids=position_ids, use_cache=True)
            ones = tokens.new_ones(tokens.shape)
            token_embeddings = self.input_embeddings(tokens, ones, next_token_position + step - 1)  # (B, 1, d)
            state["mask"] = torch.cat([state["mask"], ones], dim=1)
            state["position"] = state["position"] + 1
            return self.backbone(
                inputs_embeds=token_embeddings,
                attention_mask=state["mask"],
                position_ids=state["position"],
                cache=past,
                use_cache=True,
            )

        return self._greedy(step_model, None, max_new_tokens, eos_token_id, pad_token_id, batch_size=input_ids.shape[0])

    @staticmethod
    def _greedy(step_model, first_tokens, max_new_tokens, eos_token_id, pad_token_id, batch_size=None):
        tokens = first_tokens
        batch_size = batch_size if batch_size is not None else first_tokens.shape[0]
        past = None
        finished = None
        chosen, scores = [], []
        for step in range(max_new_tokens):
            output = step_model(tokens, past, step)
            past = output.cache  # transformers 5.25 names the KV cache `cache`
            logits = output.logits[:, -1].float()  # (B, V)
            next_tokens = logits.argmax(dim=-1)
            if finished is None:
                finished = torch.zeros_like(next_tokens, dtype=torch.bool)
            next_tokens = next_tokens.masked_fill(finished, pad_token_id)
            chosen.append(next_tokens)
            scores.append(logits)
            if eos_token_id is not None:
                finished = finished | (next_tokens == eos_token_id)
                if bool(finished.all()):
                    break
            tokens = next_tokens.unsqueeze(1)
        if not chosen:
            return torch.zeros((batch_size, 0), dtype=torch.long), torch.zeros((batch_size, 0, 0))
        return torch.stack(chosen, dim=1), torch.stack(scores, dim=1)


def build_offset(method: str, hidden_size: int, rank: int | None, max_length: int, dropout: float = 0.1) -> nn.Module | None:
    """Build the input offset of a prompt method: None for ``pt``, else DePT's or ADePT's.

    Raises:
        ValueError: If the method is unknown.
    """
    if method == "pt":
        return None
    if method == "dept":
        return DePTOffset(max_length, hidden_size, rank)
    if method == "adept":
        return ADePTOffset(hidden_size, rank, dropout)
    raise ValueError(f"unknown prompt method {method!r}; choose one of {PROMPT_METHODS}.")


PROMPT_METHODS = ("pt", "dept", "adept")
