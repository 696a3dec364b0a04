"""Training-step and generation time of ADePT against prompt tuning, on the same batches.

Compares, on one randomly initialised T5 built from ``T5Config`` (d_model 768, so the
parameter budgets are T5-base's):

- ADePT, 60 prompt tokens, offset rank 19 (76,051 trainable values);
- prompt tuning with 100 tokens through the suite's wrapper (76,800 values);
- PEFT's own prompt tuning with 100 virtual tokens on the encoder (``PromptTuningConfig``,
  76,800 values).

The methods take turns inside each of ``--repeats`` rounds, so machine load affects them
alike. By default the clock is this process's CPU time with one torch thread, which other
jobs on a loaded machine barely change; ``--clock wall`` measures wall time instead. Ratios use the minimum over the rounds, because load from other processes only adds
time; the medians are printed too. Ratios below 1.0 mean ADePT is faster.

Run: ``python bench/adept_speed.py`` (add ``--layers 12`` for T5-base depth).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import T5Config, T5ForConditionalGeneration

from lightning_modules.adapters.prompts import PromptedModel, SoftPrompt, build_offset


def build_t5(layers: int, seed: int) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=layers, num_decoder_layers=layers,
        num_heads=12, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    return T5ForConditionalGeneration(config)


def suite_model(method: str, prompt_length: int, rank: int | None, layers: int, max_length: int) -> PromptedModel:
    backbone = build_t5(layers, seed=0)
    soft_prompt = SoftPrompt(prompt_length, 768)
    soft_prompt.initialize_from_vocabulary(backbone.get_input_embeddings().weight)
    return PromptedModel(backbone, soft_prompt, build_offset(method, 768, rank, max_length))


def peft_model(layers: int):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    # PEFT gives a seq2seq model a second prompt for the decoder unless num_transformer_submodules
    # is 1; with 1 it prompts the encoder only (76,800 values), like the suite's wrapper.
    config = PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=100, num_transformer_submodules=1)
    return get_peft_model(build_t5(layers, seed=0), config)


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_batches(count: int, batch_size: int, length: int, seed: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        input_ids = torch.randint(2, 32000, (batch_size, length), generator=generator)
        lengths = torch.randint(length // 2, length + 1, (batch_size,), generator=generator)
        attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        input_ids = input_ids.masked_fill(attention_mask == 0, 0)
        labels = torch.randint(2, 32000, (batch_size, 3), generator=generator)
        labels = torch.cat([labels, torch.ones(batch_size, 1, dtype=torch.long)], dim=1)  # ends with EOS
        batches.append({"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels})
    return batches


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def time_training(model, optimizer, batch, is_peft: bool) -> float:
    model.train()
    start = clock()
    if is_peft:
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    else:
        loss = model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"]).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return clock() - start


@torch.no_grad()
def time_generation(model, batch, is_peft: bool, new_tokens: int) -> float:
    model.eval()
    start = clock()
    if is_peft:
        model.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, do_sample=False, num_beams=1,
        )
    else:
        model.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=new_tokens)
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2, help="encoder and decoder layers of the T5 (T5-base: 12)")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per batch")
    parser.add_argument("--length", type=int, default=128, help="source tokens per row before padding")
    parser.add_argument("--new-tokens", type=int, default=4, help="tokens generated per row (no early stop)")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds after one warm-up round")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="process CPU time or wall time")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 with --clock cpu)")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    threads = args.threads or (1 if args.clock == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)

    models = {
        "adept_m60_r19": (suite_model("adept", 60, 19, args.layers, args.length), False),
        "pt_100": (suite_model("pt", 100, None, args.layers, args.length), False),
        "peft_pt_100": (peft_model(args.layers), True),
    }
    optimizers = {
        name: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        for name, (model, _) in models.items()
    }
    batches = make_batches(args.repeats + 1, args.batch_size, args.length, seed=0)
    train_times = {name: [] for name in models}
    generate_times = {name: [] for name in models}
    for round_index, batch in enumerate(batches):
        for name, (model, is_peft) in models.items():
            train_time = time_training(model, optimizers[name], batch, is_peft)
            generate_time = time_generation(model, batch, is_peft, args.new_tokens)
            if round_index > 0:  # the first round warms up allocators and caches
                train_times[name].append(train_time)
                generate_times[name].append(generate_time)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; T5 d_model 768, {args.layers}+{args.layers} layers; "
          f"batch {args.batch_size} x {args.length} tokens; {args.new_tokens} generated tokens; {args.repeats} rounds; {args.clock} clock")
    print(f"{'model':<16}{'trainable':>12}{'train min s':>13}{'train median s':>16}{'generate min s':>16}{'generate median s':>19}")
    minimums = {}
    for name, (model, _) in models.items():
        minimums[name] = (min(train_times[name]), min(generate_times[name]))
        print(
            f"{name:<16}{trainable(model):>12,}{minimums[name][0]:>13.3f}{statistics.median(train_times[name]):>16.3f}"
            f"{minimums[name][1]:>16.3f}{statistics.median(generate_times[name]):>19.3f}"
        )
    adept = minimums["adept_m60_r19"]
    for baseline in ("pt_100", "peft_pt_100"):
        train_ratio = adept[0] / minimums[baseline][0]
        generate_ratio = adept[1] / minimums[baseline][1]
        print(f"ADePT / {baseline}: training-step time ratio {train_ratio:.3f}, generation time ratio {generate_ratio:.3f}")


if __name__ == "__main__":
    main()
