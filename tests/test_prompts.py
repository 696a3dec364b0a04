"""Soft prompts, DePT and ADePT offsets and the prompted backbone wrapper, on tiny models."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

from lightning_modules.adapters.prompts import (
    ADePTOffset,
    DePTOffset,
    PromptedModel,
    SoftPrompt,
    adept_parameter_count,
    append_targets,
    build_offset,
    dept_parameter_count,
    solve_prompt_budget,
)


def tiny_t5(d_model: int = 32) -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=64, d_model=d_model, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.0,
    )
    return T5ForConditionalGeneration(config).eval()


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def tiny_bert(num_labels: int = 3) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=40, num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config).eval()


def prompted(backbone, method: str, prompt: torch.Tensor, rank: int = 4, max_length: int = 16) -> PromptedModel:
    soft_prompt = SoftPrompt(prompt.shape[0], prompt.shape[1])
    soft_prompt.embeddings.data.copy_(prompt)
    offset = build_offset(method, prompt.shape[1], rank, max_length)
    return PromptedModel(backbone, soft_prompt, offset, max_length=max_length)


BATCH_IDS = torch.tensor([[5, 6, 7, 8, 1], [9, 10, 1, 0, 0]])
BATCH_MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


@pytest.mark.parametrize("method", ["adept", "dept"])
@pytest.mark.parametrize("kind", ["t5", "llama", "bert"])
def test_offset_at_init_equals_prompt_tuning(method, kind):
    build = {"t5": tiny_t5, "llama": tiny_llama, "bert": tiny_bert}[kind]
    prompt = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    baseline = prompted(build(), "pt", prompt)
    method_model = prompted(build(), method, prompt)
    method_model.train()  # dropout on the hidden layer must not matter while W2 and b2 are zero
    kwargs = {"labels": torch.tensor([[3, 4, 1], [3, 1, -100]])} if kind == "t5" else {}
    expected = baseline(BATCH_IDS, BATCH_MASK, **kwargs).logits
    actual = method_model(BATCH_IDS, BATCH_MASK, **kwargs).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_offset_changes_logits_once_trained():
    prompt = torch.randn(3, 32)
    baseline = prompted(tiny_t5(), "pt", prompt)
    model = prompted(tiny_t5(), "adept", prompt)
    torch.nn.init.normal_(model.offset.down.weight, std=0.5)
    labels = torch.tensor([[3, 4, 1], [3, 1, -100]])
    difference = (model(BATCH_IDS, BATCH_MASK, labels=labels).logits - baseline(BATCH_IDS, BATCH_MASK, labels=labels).logits).abs().max()
    assert difference > 1e-3


def test_offsets_leave_padding_unchanged():
    embeddings = torch.randn(2, 5, 32)
    for offset in (ADePTOffset(32, 4), DePTOffset(16, 32, 4)):
        for parameter in offset.parameters():
            torch.nn.init.normal_(parameter)
        output = offset(embeddings, BATCH_MASK)
        torch.testing.assert_close(output[1, 3:], embeddings[1, 3:])
        assert (output[0] - embeddings[0]).abs().min() > 0


def test_dept_offset_depends_on_token_position_only():
    offset = DePTOffset(16, 32, 4)
    torch.nn.init.normal_(offset.lora_embedding_B)
    embeddings = torch.zeros(2, 4, 32)
    right = offset(embeddings, torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))
    left = offset(embeddings, torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]))
    torch.testing.assert_close(left[0, 2:], right[0, :2])
    torch.testing.assert_close(right[1, 0], right[0, 0])


def test_dept_rejects_input_longer_than_max_length():
    offset = DePTOffset(4, 32, 2)
    with pytest.raises(ValueError, match="5 tokens.*max_length=4"):
        offset(torch.zeros(1, 5, 32), torch.ones(1, 5))


def test_budget_formula_matches_reference_counts():
    budget = solve_prompt_budget(hidden_size=768, prompt_length=60, max_length=256)
    assert budget.budget == 76_800
    assert budget.dept_rank == 30
    assert budget.dept_parameters == 76_800
    assert budget.adept_rank == 19
    assert budget.adept_parameters == 76_051
    assert dept_parameter_count(60, 30, 256, 768) == 60 * 768 + 30 * (256 + 768)
    assert adept_parameter_count(60, 19, 768) == 46_080 + 19 * (2 * 768 + 1) + 768


def test_budget_rejects_prompt_filling_budget():
    with pytest.raises(ValueError, match="100-token prompt"):
        solve_prompt_budget(hidden_size=768, prompt_length=100, max_length=256)


@pytest.mark.parametrize(
    "method, prompt_length, rank, expected",
    [("pt", 100, None, 76_800), ("dept", 60, 30, 76_800), ("adept", 60, 19, 76_051)],
)
def test_trainable_parameters_on_t5_width_768(method, prompt_length, rank, expected):
    backbone = tiny_t5(d_model=768)
    model = PromptedModel(backbone, SoftPrompt(prompt_length, 768), build_offset(method, 768, rank, 256), max_length=256)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == expected
    assert all(not p.requires_grad for p in backbone.parameters())


def test_classifier_head_trains_with_prompt():
    backbone = tiny_bert()
    model = PromptedModel(backbone, SoftPrompt(4, 32), build_offset("adept", 32, 3, 16), max_length=16)
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    assert names == {
        "soft_prompt.embeddings", "offset.up.weight", "offset.up.bias", "offset.down.weight", "offset.down.bias",
        "backbone.classifier.weight", "backbone.classifier.bias",
    }


def test_only_prompt_and_offset_get_gradients():
    backbone = tiny_t5()
    embedding_before = backbone.get_input_embeddings().weight.detach().clone()
    model = prompted(backbone, "adept", torch.randn(3, 32))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    labels = torch.tensor([[3, 4, 1], [3, 1, -100]])
    model.train()
    for _ in range(3):
        loss = model(BATCH_IDS, BATCH_MASK, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with_gradient = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_gradient == {"soft_prompt.embeddings", "offset.up.weight", "offset.up.bias", "offset.down.weight", "offset.down.bias"}
    assert model.offset.down.weight.abs().sum() > 0
    torch.testing.assert_close(backbone.get_input_embeddings().weight, embedding_before, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["pt", "dept", "adept"])
def test_decoder_generation_matches_full_forward(method):
    model = prompted(tiny_llama(), method, torch.randn(3, 32), max_length=16)
    if model.offset is not None:  # a non-zero offset, so that generated tokens must get it too
        for parameter in model.offset.parameters():
            torch.nn.init.normal_(parameter, std=0.1)
    model.eval()
    rows = [[1, 5, 6, 7, 8], [1, 9, 10]]
    width = max(len(row) for row in rows)
    ids = torch.tensor([[0] * (width - len(row)) + row for row in rows])  # left padding
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    tokens, scores = model.generate(ids, mask, max_new_tokens=3, pad_token_id=0)
    assert tokens.shape == (2, 3)
    for index, row in enumerate(rows):
        for step in range(3):
            sequence = torch.tensor([row + tokens[index, :step].tolist()])
            logits = model(sequence, torch.ones_like(sequence)).logits[0, -1]
            torch.testing.assert_close(scores[index, step], logits, rtol=1e-4, atol=1e-4)


def test_decoder_right_padding_equals_left_padding():
    model = prompted(tiny_llama(), "adept", torch.randn(3, 32))
    left_ids = torch.tensor([[0, 0, 1, 9, 10]])
    right_ids = torch.tensor([[1, 9, 10, 0, 0]])
    left = model(left_ids, (left_ids != 0).long(), labels=torch.tensor([[-100, -100, -100, 9, 10]]))
    right = model(right_ids, (right_ids != 0).long(), labels=torch.tensor([[-100, 9, 10, -100, -100]]))
    torch.testing.assert_close(left.logits[0, -1], right.logits[0, -1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(left.loss, right.loss, rtol=1e-5, atol=1e-5)


def test_decoder_loss_excludes_prompt_positions():
    model = prompted(tiny_llama(), "pt", torch.randn(3, 32))
    ids = torch.tensor([[1, 9, 10, 11]])
    labels = torch.tensor([[-100, -100, 10, 11]])
    output = model(ids, torch.ones_like(ids), labels=labels)
    logits = output.logits[0]  # (m + L, V): positions m+1 and m+2 predict tokens 10 and 11
    expected = torch.nn.functional.cross_entropy(logits[4:6], torch.tensor([10, 11]))
    torch.testing.assert_close(output.loss, expected, rtol=1e-5, atol=1e-5)


def test_t5_generation_matches_teacher_forcing():
    model = prompted(tiny_t5(), "adept", torch.randn(3, 32))
    tokens, scores = model.generate(BATCH_IDS, BATCH_MASK, max_new_tokens=3, pad_token_id=0)
    decoder_input_ids = torch.cat([torch.zeros(2, 1, dtype=torch.long), tokens[:, :2]], dim=1)
    logits = model(BATCH_IDS, BATCH_MASK, decoder_input_ids=decoder_input_ids).logits
    torch.testing.assert_close(scores, logits, rtol=1e-4, atol=1e-4)


def test_prompt_longer_than_model_maximum_is_rejected():
    with pytest.raises(ValueError, match="maximum length is 40; lower max_length to at most 10"):
        PromptedModel(tiny_bert(), SoftPrompt(30, 32), max_length=16)


def test_input_longer_than_model_maximum_is_rejected_at_forward():
    model = PromptedModel(tiny_bert(), SoftPrompt(30, 32))
    ids = torch.ones(1, 12, dtype=torch.long)
    with pytest.raises(ValueError, match="needs 42 positions"):
        model(ids, torch.ones_like(ids))


def test_soft_prompt_initialisations():
    weight = torch.randn(50, 8)
    prompt = SoftPrompt(5, 8)
    prompt.initialize_from_tokens(weight, [3, 7])
    torch.testing.assert_close(prompt.embeddings.data, weight[[3, 7, 3, 7, 3]])
    prompt.initialize_from_vocabulary(weight, seed=0, max_token_id=10)
    rows = [int((weight[:10] - vector).abs().sum(dim=1).argmin()) for vector in prompt.embeddings.data]
    torch.testing.assert_close(prompt.embeddings.data, weight[rows])
    prompt.initialize_random(std=0.5, seed=0)
    assert 0.2 < prompt.embeddings.std() < 0.8
    with pytest.raises(ValueError, match="no tokens"):
        prompt.initialize_from_tokens(weight, [])


def test_append_targets_masks_source_in_labels():
    ids, mask, labels = append_targets(
        torch.tensor([[5, 6, 7], [8, 0, 0]]), torch.tensor([[1, 1, 1], [1, 0, 0]]),
        torch.tensor([[3, 2], [4, -100]]), pad_token_id=0,
    )
    assert ids.tolist() == [[5, 6, 7, 3, 2], [8, 4, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert labels.tolist() == [[-100, -100, -100, 3, 2], [-100, 4, -100, -100, -100]]
