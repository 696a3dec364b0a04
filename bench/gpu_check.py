"""Check the suite on one CUDA GPU and print a Markdown table of what ran and how fast.

Steps, each with its own time limit, inside a total budget of 7.5 minutes (a step that would
start with less than 10 s of the budget left is reported as skipped):

1. The three demo configs (LoRA-Null, ADePT, FIAN) with ``configs/trainer/gpu_bf16.yaml`` and
   a few training steps, each through the CLI in a subprocess.
2. LoRA-Null v1 training throughput in tokens/s (bf16 autocast, AdamW, rank 8 on all seven
   projection types) on SmolLM2-135M-Instruct (``packaged:smollm2-135m-instruct``) and on a
   randomly initialised LLaMA of about 1.1B parameters built from ``LlamaConfig`` directly on
   the GPU, so nothing is downloaded. Calibration runs on random token ids, with float32
   eigendecompositions to keep it short.
3. The LoRA-Null demo under ``FSDPStrategy`` (``configs/trainer/fsdp.yaml``) and under FSDP2
   (``configs/trainer/fsdp2.yaml``), both with one process.

Usage::

    python bench/gpu_check.py [--skip-demos] [--skip-throughput] [--skip-fsdp]

It exits with status 2 and a message when no CUDA GPU is visible, and with status 1 when a
step failed or was skipped. Needs the ``demo`` extra (packaged models and word vectors).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPOSITORY = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TOTAL_BUDGET_S = 450
MIN_STEP_S = 10
LLAMA_1B = dict(  # the TinyLlama-1.1B shape: about 1.1e9 parameters
    vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
    num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
)


def run_cli(name: str, arguments: list[str], timeout_s: int, root: Path, deadline: float) -> dict:
    """Run ``adaptground fit`` with ``arguments`` in a subprocess, stopping it after ``timeout_s``
    or at ``deadline`` (a ``time.perf_counter`` value); return a table row."""
    timeout_s = int(min(timeout_s, deadline - time.perf_counter()))
    if timeout_s < MIN_STEP_S:
        return {"check": name, "status": "skipped: time budget spent", "seconds": 0.0, "detail": ""}
    command = [sys.executable, str(REPOSITORY / "cli.py"), "fit", *arguments, "--trainer.default_root_dir", str(root / name)]
    environment = {key: value for key, value in os.environ.items() if key not in ("LOCAL_RANK", "NODE_RANK", "MASTER_PORT", "WORLD_SIZE", "RANK")}
    start = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"check": name, "status": f"timed out after {timeout_s} s", "seconds": timeout_s, "detail": ""}
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {"check": name, "status": f"failed (exit {result.returncode})", "seconds": seconds, "detail": last_line[:160]}
    return {"check": name, "status": "ok", "seconds": seconds, "detail": ""}


def demo_rows(root: Path, deadline: float) -> list[dict]:
    gpu = ["--config", "configs/trainer/gpu_bf16.yaml"]
    return [
        run_cli("lora_null demo", ["--config", "configs/lora_null/demo.yaml", *gpu, "--trainer.max_steps", "20", "--trainer.val_check_interval", "10"], 120, root, deadline),
        run_cli("adept demo", ["--config", "configs/adept/demo.yaml", *gpu, "--trainer.max_steps", "40", "--trainer.val_check_interval", "20"], 60, root, deadline),
        # The first run generates the video corpus and caches its features (CPU work).
        run_cli("fian demo", ["--config", "configs/fian/demo.yaml", *gpu, "--trainer.max_epochs", "1"], 150, root, deadline),
    ]


def fsdp_rows(root: Path, deadline: float) -> list[dict]:
    lora_null = ["--config", "configs/lora_null/demo.yaml", "--trainer.max_steps", "5", "--trainer.val_check_interval", "5"]
    one_process = ["--trainer.devices", "1"]
    fsdp2 = [*one_process, "--trainer.strategy.init_args.data_parallel_size", "1"]
    return [
        run_cli("lora_null FSDP (1 GPU)", [*lora_null, "--config", "configs/trainer/fsdp.yaml", *one_process], 60, root, deadline),
        run_cli("lora_null FSDP2 (1 GPU)", [*lora_null, "--config", "configs/trainer/fsdp2.yaml", *fsdp2], 60, root, deadline),
    ]


def lora_null_throughput(name: str, model: torch.nn.Module, batch_size: int, length: int, steps: int) -> dict:
    """Calibrate and initialise LoRA-Null v1 on ``model`` (on the GPU), then time training steps."""
    from callbacks.null_space_calibration import accumulate_second_moments, bases_from_moments
    from lightning_modules.adapters.initializers import initialize_adapters
    from lightning_modules.adapters.lora import inject_lora

    device = torch.device("cuda")
    vocab_size = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    adapters = inject_lora(model, TARGETS, rank=8)
    model.eval()

    start = time.perf_counter()
    calibration = [
        {"input_ids": torch.randint(vocab_size, (4, length), generator=generator), "attention_mask": torch.ones(4, length, dtype=torch.long)}
        for _ in range(4)
    ]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        accumulator = accumulate_second_moments(model, adapters, calibration, device, progress=False)
    bases = bases_from_moments(accumulator, adapters, torch.float32)
    initialize_adapters(adapters, "lora_null_v1", bases=bases)
    calibration_seconds = time.perf_counter() - start

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    input_ids = torch.randint(vocab_size, (batch_size, length), generator=generator).to(device)
    timings = []
    for step in range(steps + 3):  # 3 warm-up steps
        torch.cuda.synchronize()
        step_start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= 3:
            timings.append(time.perf_counter() - step_start)
    tokens_per_second = batch_size * length * len(timings) / sum(timings)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30
    detail = f"{tokens_per_second:,.0f} tokens/s; batch {batch_size} x {length}; calibration + init {calibration_seconds:.1f} s; peak {peak_gib:.1f} GiB"
    return {"check": f"LoRA-Null v1 throughput, {name}", "status": "ok", "seconds": calibration_seconds + sum(timings), "detail": detail}


def throughput_rows(deadline: float) -> list[dict]:
    from lightning_modules.model_loading import load_causal_lm

    rows = []
    for name, build in (
        ("SmolLM2-135M", lambda: load_causal_lm("packaged:smollm2-135m-instruct", torch.float32).cuda()),
        ("random LLaMA 1.1B", lambda: build_random_llama()),
    ):
        if deadline - time.perf_counter() < MIN_STEP_S:
            rows.append({"check": f"LoRA-Null v1 throughput, {name}", "status": "skipped: time budget spent", "seconds": 0.0, "detail": ""})
            continue
        torch.cuda.reset_peak_memory_stats()
        try:
            model = build()
            rows.append(lora_null_throughput(name, model, batch_size=8, length=512, steps=10))
        except Exception as error:  # report every step, then exit non-zero
            rows.append({"check": f"LoRA-Null v1 throughput, {name}", "status": "failed", "seconds": 0.0, "detail": f"{type(error).__name__}: {error}"[:160]})
        model = None
        torch.cuda.empty_cache()
    return rows


def build_random_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**LLAMA_1B)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)  # float32 weights on the GPU, random; autocast computes in bf16
    return model


def markdown_table(rows: list[dict]) -> str:
    lines = ["| check | status | seconds | detail |", "|---|---|---:|---|"]
    for row in rows:
        lines.append(f"| {row['check']} | {row['status']} | {row['seconds']:.1f} | {row['detail'].replace('|', '/')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-demos", action="store_true", help="do not run the three demo configs")
    parser.add_argument("--skip-throughput", action="store_true", help="do not measure LoRA-Null tokens/s")
    parser.add_argument("--skip-fsdp", action="store_true", help="do not run the FSDP and FSDP2 checks")
    parser.add_argument("--output-dir", default="runs/gpu_check", help="folder for the runs' logs and checkpoints")
    arguments = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False); run it on a machine with "
              "an NVIDIA GPU and a CUDA build of torch.", file=sys.stderr)
        return 2
    root = (REPOSITORY / arguments.output_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPOSITORY))

    deadline = time.perf_counter() + TOTAL_BUDGET_S
    rows = []
    if not arguments.skip_demos:
        rows += demo_rows(root, deadline)
    if not arguments.skip_throughput:
        rows += throughput_rows(deadline)
    if not arguments.skip_fsdp:
        rows += fsdp_rows(root, deadline)
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}\n")
    print(markdown_table(rows))
    return 0 if all(row["status"] == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
