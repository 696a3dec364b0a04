"""A tiny random LLaMA model and a character-level tokenizer, saved as a local model folder."""

from __future__ import annotations

import string
from pathlib import Path

import torch

CHARACTERS = list(string.ascii_letters + string.digits + string.punctuation + " \n")


def build_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocabulary = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for character in CHARACTERS:
        vocabulary.setdefault(character, len(vocabulary))
    backend = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def build_model(vocab_size: int, hidden_size: int = 32, layers: int = 2, seed: int = 0, tie: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def save_tiny_model(folder: Path, hidden_size: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny LLaMA model and its tokenizer to ``folder`` and return the folder."""
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), hidden_size=hidden_size, layers=layers, seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
