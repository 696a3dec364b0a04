"""FIAN: fine-grained iterative attention network for temporal grounding (plain PyTorch).

After "Fine-grained Iterative Attention Network for Temporal Language Localization in
Videos" (Qu et al., ACM MM 2020). The paper's abstract fixes the structure; sizes, pooling,
gating and encoder types below are this suite's choices, each a constructor argument:

1. Query encoder: frozen word vectors ``(B, L, E)`` into a bidirectional GRU or LSTM.
2. Video encoder: clip features ``(B, N, F)`` projected to width ``H`` and, optionally, a BiGRU.
3. Iterative attention, repeated ``K`` times (:class:`BilateralAttentionStep`). First,
   query by video: every word attends over all clips, is enhanced with its video context,
   and the enhanced words are pooled into an integrated query. Then, video by query: every
   clip attends over the enhanced words and a gate fuses it with that context and the
   integrated query. The updated clips feed the next step.
4. Cross-modal representation ``[v; v * q; q]`` and a temporal encoder over clips.
5. Content-oriented heads, no anchors: per-clip start and end logits and an "inside the
   moment" content logit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

NEGATIVE_INFINITY = -1e9  # fills masked logits; it is finite, so a fully masked row gives no NaN


@dataclass
class FIANOutput:
    """Per-clip logits. All tensors are ``(B, N)``; padded clips hold a large negative value."""

    start_logits: torch.Tensor
    end_logits: torch.Tensor
    content_logits: torch.Tensor


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over ``dim`` that gives zero weight where ``mask`` is False."""
    return torch.softmax(logits.masked_fill(~mask, NEGATIVE_INFINITY), dim=dim)


class QueryEncoder(nn.Module):
    """Bidirectional GRU or LSTM over word vectors.

    Args:
        word_dim: Word vector size ``E``.
        hidden_dim: Output width ``H`` (``H / 2`` per direction); must be even.
        rnn_type: ``"gru"`` or ``"lstm"``.
        num_layers: Stacked RNN layers.
        dropout: Dropout on the word vectors.
    """

    def __init__(self, word_dim: int, hidden_dim: int, rnn_type: str = "gru", num_layers: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even for a bidirectional encoder, got {hidden_dim}.")
        rnn_class = {"gru": nn.GRU, "lstm": nn.LSTM}.get(rnn_type)
        if rnn_class is None:
            raise ValueError(f"query rnn_type must be 'gru' or 'lstm', got {rnn_type!r}.")
        self.dropout = nn.Dropout(dropout)
        self.rnn = rnn_class(word_dim, hidden_dim // 2, num_layers=num_layers, batch_first=True, bidirectional=True)

    def forward(self, words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """Encode ``(B, L, E)`` word vectors with ``(B, L)`` mask into ``(B, L, H)``."""
        lengths = word_mask.sum(dim=1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.dropout(words), lengths, batch_first=True, enforce_sorted=False)
        output, _ = self.rnn(packed)
        output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=words.shape[1])
        return output


class VideoEncoder(nn.Module):
    """Clip features to width ``H``: a linear projection, optionally followed by a BiGRU.

    Args:
        feature_dim: Clip feature size ``F``.
        hidden_dim: Output width ``H``; even when ``rnn`` is True.
        rnn: Add a bidirectional GRU after the projection.
        dropout: Dropout on the input features.
    """

    def __init__(self, feature_dim: int, hidden_dim: int, rnn: bool = True, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, hidden_dim), nn.ReLU())
        self.rnn = nn.GRU(hidden_dim, hidden_dim // 2, batch_first=True, bidirectional=True) if rnn else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Encode ``(B, N, F)`` clip features into ``(B, N, H)``."""
        clips = self.projection(self.dropout(features))
        if self.rnn is not None:
            clips, _ = self.rnn(clips)
        return clips


class BilateralAttentionStep(nn.Module):
    """One query-by-video then video-by-query attention step.

    Word-clip affinities are bilinear, ``s_ij = w_i^T W c_j / sqrt(H)``.

    Args:
        hidden_dim: Width ``H`` of words and clips.
        gate: ``"sigmoid"`` fuses clip and context with a per-channel sigmoid gate
            ``g * v + (1 - g) * u``; ``"none"`` adds them (``v + u``).
        dropout: Dropout on the fused clips.
    """

    def __init__(self, hidden_dim: int, gate: str = "sigmoid", dropout: float = 0.1) -> None:
        super().__init__()
        if gate not in ("sigmoid", "none"):
            raise ValueError(f"gate must be 'sigmoid' or 'none', got {gate!r}.")
        self.scale = hidden_dim**-0.5
        self.affinity = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.word_enhance = nn.Sequential(nn.Linear(3 * hidden_dim, hidden_dim), nn.ReLU())
        self.word_pool = nn.Linear(hidden_dim, 1)
        self.clip_context = nn.Sequential(nn.Linear(3 * hidden_dim, hidden_dim), nn.Tanh())
        self.gate = nn.Linear(3 * hidden_dim, hidden_dim) if gate == "sigmoid" else None
        self.norm = nn.LayerNorm(hidden_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, words: torch.Tensor, word_mask: torch.Tensor, clips: torch.Tensor, clip_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run one step.

        Args:
            words: ``(B, L, H)`` word states.
            word_mask: ``(B, L)`` True for real words.
            clips: ``(B, N, H)`` clip states.
            clip_mask: ``(B, N)`` True for real clips.

        Returns:
            Enhanced words ``(B, L, H)``, integrated query ``(B, H)`` and updated clips ``(B, N, H)``.
        """
        affinity = torch.einsum("blh,bnh->bln", self.affinity(words), clips) * self.scale  # (B, L, N)

        # Query by video: each word attends over all clips.
        word_to_clip = masked_softmax(affinity, clip_mask.unsqueeze(1), dim=2)  # (B, L, N)
        video_context = torch.bmm(word_to_clip, clips)  # (B, L, H)
        enhanced_words = self.word_enhance(torch.cat([words, video_context, words * video_context], dim=-1))  # (B, L, H)
        pool_weights = masked_softmax(self.word_pool(enhanced_words).squeeze(-1), word_mask, dim=1)  # (B, L)
        query = torch.bmm(pool_weights.unsqueeze(1), enhanced_words).squeeze(1)  # (B, H)

        # Video by query: each clip attends over the enhanced words.
        clip_to_word = masked_softmax(affinity.transpose(1, 2), word_mask.unsqueeze(1), dim=2)  # (B, N, L)
        word_context = torch.bmm(clip_to_word, enhanced_words)  # (B, N, H)
        query_expanded = query.unsqueeze(1).expand_as(clips)  # (B, N, H)
        update = self.clip_context(torch.cat([word_context, query_expanded, clips * query_expanded], dim=-1))  # (B, N, H)
        if self.gate is not None:
            gate = torch.sigmoid(self.gate(torch.cat([clips, word_context, query_expanded], dim=-1)))  # (B, N, H)
            fused = gate * clips + (1 - gate) * update
        else:
            fused = clips + update
        new_clips = self.norm(clips + self.dropout(fused)) * clip_mask.unsqueeze(-1)
        return enhanced_words, query, new_clips


class TemporalEncoder(nn.Module):
    """Temporal context over clips: a BiGRU or a stack of 1-D convolutions (kernel 3)."""

    def __init__(self, hidden_dim: int, kind: str = "gru", num_layers: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        if kind == "gru":
            self.encoder = nn.GRU(hidden_dim, hidden_dim // 2, num_layers=num_layers, batch_first=True, bidirectional=True)
        elif kind == "conv":
            layers: list[nn.Module] = []
            for _ in range(num_layers):
                layers += [nn.Conv1d(hidden_dim, hidden_dim, kernel_size=3, padding=1), nn.ReLU()]
            self.encoder = nn.Sequential(*layers)
        else:
            raise ValueError(f"temporal encoder must be 'gru' or 'conv', got {kind!r}.")
        self.kind = kind
        self.dropout = nn.Dropout(dropout)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Map ``(B, N, H)`` to ``(B, N, H)``."""
        if self.kind == "gru":
            output, _ = self.encoder(clips)
        else:
            output = self.encoder(clips.transpose(1, 2)).transpose(1, 2)
        return self.dropout(output)


class ContentOrientedHeads(nn.Module):
    """Per-clip start, end and content logits from ``(B, N, H)`` clip states."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.content = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))
        # Start and end see the content score as well, so boundaries follow the content.
        self.boundary = nn.Sequential(nn.Linear(hidden_dim + 1, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 2))

    def forward(self, clips: torch.Tensor, clip_mask: torch.Tensor) -> FIANOutput:
        content = self.content(clips)  # (B, N, 1)
        boundary = self.boundary(torch.cat([clips, content], dim=-1))  # (B, N, 2)
        invalid = ~clip_mask
        return FIANOutput(
            start_logits=boundary[..., 0].masked_fill(invalid, NEGATIVE_INFINITY),
            end_logits=boundary[..., 1].masked_fill(invalid, NEGATIVE_INFINITY),
            content_logits=content.squeeze(-1).masked_fill(invalid, NEGATIVE_INFINITY),
        )


class FIAN(nn.Module):
    """The full network.

    Args:
        feature_dim: Clip feature size ``F``.
        word_dim: Word vector size ``E``.
        hidden_dim: Model width ``H`` (even).
        num_iterations: Attention steps ``K``; each step has its own weights.
        query_rnn: ``"gru"`` or ``"lstm"`` for the query encoder.
        video_rnn: Add a BiGRU to the video encoder.
        gate: Fusion in the video-by-query step, ``"sigmoid"`` or ``"none"``.
        update_words: Feed the enhanced words of step ``k`` into step ``k + 1`` (True) or
            reuse the encoded words in every step (False).
        temporal_encoder: ``"gru"`` or ``"conv"``.
        temporal_layers: Layers of the temporal encoder.
        dropout: Dropout probability used throughout.
    """

    def __init__(
        self,
        feature_dim: int,
        word_dim: int = 50,
        hidden_dim: int = 128,
        num_iterations: int = 2,
        query_rnn: str = "gru",
        video_rnn: bool = True,
        gate: str = "sigmoid",
        update_words: bool = False,
        temporal_encoder: str = "gru",
        temporal_layers: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_iterations < 1:
            raise ValueError(f"num_iterations must be at least 1, got {num_iterations}.")
        self.feature_dim = feature_dim
        self.word_dim = word_dim
        self.update_words = update_words
        self.query_encoder = QueryEncoder(word_dim, hidden_dim, rnn_type=query_rnn, dropout=dropout)
        self.video_encoder = VideoEncoder(feature_dim, hidden_dim, rnn=video_rnn, dropout=dropout)
        self.steps = nn.ModuleList(BilateralAttentionStep(hidden_dim, gate=gate, dropout=dropout) for _ in range(num_iterations))
        self.cross_modal = nn.Sequential(nn.Linear(3 * hidden_dim, hidden_dim), nn.ReLU())
        self.temporal_encoder = TemporalEncoder(hidden_dim, kind=temporal_encoder, num_layers=temporal_layers, dropout=dropout)
        self.heads = ContentOrientedHeads(hidden_dim)

    def forward(self, features: torch.Tensor, clip_mask: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor) -> FIANOutput:
        """Score every clip.

        Args:
            features: ``(B, N, F)`` clip features.
            clip_mask: ``(B, N)`` True for real clips.
            words: ``(B, L, E)`` word vectors.
            word_mask: ``(B, L)`` True for real words; every row needs at least one.

        Returns:
            :class:`FIANOutput` with ``(B, N)`` logits.
        """
        if features.shape[-1] != self.feature_dim:
            raise ValueError(f"clip features have size {features.shape[-1]}, but the model was built for feature_dim={self.feature_dim}.")
        if words.shape[-1] != self.word_dim:
            raise ValueError(f"word vectors have size {words.shape[-1]}, but the model was built for word_dim={self.word_dim}.")
        encoded_words = self.query_encoder(words, word_mask)  # (B, L, H)
        clips = self.video_encoder(features) * clip_mask.unsqueeze(-1)  # (B, N, H)
        step_words = encoded_words
        query = None
        for step in self.steps:
            enhanced_words, query, clips = step(step_words, word_mask, clips, clip_mask)
            if self.update_words:
                step_words = enhanced_words
        query_expanded = query.unsqueeze(1).expand_as(clips)  # (B, N, H)
        fused = self.cross_modal(torch.cat([clips, clips * query_expanded, query_expanded], dim=-1))  # (B, N, H)
        fused = self.temporal_encoder(fused)
        return self.heads(fused, clip_mask)
