"""Train and test each LoRA-family initialiser with one config, then tabulate and plot them.

Every method runs with the same seed, model, data, rank and steps; only
``model.init_args.init`` changes. The base model is tested once (plain LoRA with no training
is the base model exactly). The script writes ``results.json``, ``results.md`` (a Markdown
table with the base model as the first row and retention relative to it) and
``task_vs_retention.png`` (task exact match and task loss against knowledge retention, one
point per method).

Usage::

    python bench/compare_initializers.py --config configs/lora_null/compare_cpu_local.yaml \\
        [--methods lora pissa milora corda_kpm lora_null_v1 lora_null_v2] [--output runs/compare]

After each method the script saves ``results.json`` with the config each result came from.
A second call with the same ``--output`` and config skips the saved methods, and reruns a
saved result that came from another config. ``--restart`` reruns the base model and the
selected methods and keeps the other rows. Without ``knowledge_probes`` in the data config the table shows
the task columns only and no plot is drawn.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info

from cli import build_cli
from lightning_modules.adapters.initializers import get_initializer

METHODS = ["lora", "pissa", "milora", "corda_kpm", "lora_null_v1", "lora_null_v2"]
COLUMNS = [
    ("test/exact_match", "GSM8K EM"),
    ("test/loss", "GSM8K test loss"),
    ("test/knowledge/qa_exact_match", "NQ EM"),
    ("test/knowledge/qa_answer_loglik", "NQ answer log-lik"),
    ("test/knowledge/cloze_accuracy", "cloze acc"),
    ("test/knowledge/heldout_ppl", "held-out ppl"),
]


def run_method(config: str, method: str, output: Path) -> dict:
    start = time.perf_counter()
    common = ["--config", config, "--trainer.default_root_dir", str(output / method)]
    train_loss = None
    if method == "base":
        cli = build_cli([*common, "--model.init_args.init", "lora"], run=False)
    else:
        cli = build_cli([*common, "--model.init_args.init", method], run=False)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        train_loss = cli.trainer.callback_metrics.get("train/loss")  # the last logged value; test clears it
    metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule)[0]
    metrics = {key: float(value) for key, value in metrics.items()}
    metrics["seconds"] = time.perf_counter() - start
    if train_loss is not None:
        metrics["final_train_loss"] = float(train_loss)
    rank_zero_info(f"{method}: {json.dumps(metrics)}")
    return metrics


def markdown_table(results: dict[str, dict]) -> str:
    base = results["base"]
    header = "| method | " + " | ".join(label for _, label in COLUMNS) + " | NQ log-lik vs base | cloze vs base | final train loss | seconds |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 5)]
    for method, metrics in results.items():
        cells = [f"{metrics[key]:.4f}" if key in metrics else "-" for key, _ in COLUMNS]
        loglik = "test/knowledge/qa_answer_loglik"
        loglik_delta = f"{metrics[loglik] - base[loglik]:+.4f}" if loglik in metrics and loglik in base else "-"
        cloze = "test/knowledge/cloze_accuracy"
        cloze_ratio = f"{metrics[cloze] / max(base[cloze], 1e-9):.3f}" if cloze in metrics and cloze in base else "-"
        loss = metrics.get("final_train_loss")
        lines.append(
            f"| {method} | " + " | ".join(cells)
            + f" | {loglik_delta} | {cloze_ratio} | {'-' if loss is None else f'{loss:.3f}'} | {metrics['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = results["base"]
    panels = [("test/exact_match", "GSM8K exact match (higher is better)"),
              ("test/loss", "GSM8K response loss (lower is better)")]
    figure, axes = plt.subplots(1, len(panels), figsize=(11, 4.5))
    for axis, (key, label) in zip(axes, panels):
        for method, metrics in results.items():
            retention = metrics["test/knowledge/qa_answer_loglik"] - base["test/knowledge/qa_answer_loglik"]
            axis.scatter(retention, metrics[key], marker="*" if method == "base" else "o", s=80)
            axis.annotate(method, (retention, metrics[key]), textcoords="offset points", xytext=(5, 5))
        axis.set_xlabel("NQ-open answer log-likelihood change vs base\n(nats/token, higher = less forgetting)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="method config; its init is overridden per method")
    parser.add_argument("--methods", nargs="+", default=METHODS, help="initialisers to compare")
    parser.add_argument("--output", default="runs/compare", help="folder for runs, results and the plot")
    parser.add_argument("--restart", action="store_true",
                        help="rerun the base model and the selected methods even if OUTPUT/results.json has them")
    args = parser.parse_args()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results_path = output / "results.json"
    results: dict[str, dict] = {}
    if results_path.exists():
        results = json.loads(results_path.read_text())
        if args.restart:  # rerun the selected methods and the base model; keep the others
            results = {method: metrics for method, metrics in results.items() if method not in ["base", *args.methods]}
        if results:
            rank_zero_info(f"Keeping finished methods from {results_path}: {', '.join(results)} (--restart reruns them)")
    for method in args.methods:
        get_initializer(method)  # an unknown name fails here, before any run
    for method in ["base", *args.methods]:
        saved = results.get(method)
        if saved is not None and saved.get("config") == args.config:
            continue
        if saved is not None:
            rank_zero_info(f"Rerunning {method}: its saved result came from {saved.get('config')}, not {args.config}.")
        results[method] = {**run_method(args.config, method, output), "config": args.config}
        results_path.write_text(json.dumps(results, indent=2) + "\n")  # kept after every method
    # Rows follow the command line: the base model, the requested methods, then any others kept from the file.
    order = ["base", *args.methods]
    order += [method for method in results if method not in order]
    results = {method: results[method] for method in order}
    (output / "results.md").write_text(markdown_table(results))
    if "test/knowledge/qa_answer_loglik" not in results["base"]:
        rank_zero_info(f"Wrote {results_path} and {output / 'results.md'}; no plot, because the config's data has no "
                       f"knowledge_probes (see configs/lora_null/compare_cpu_local.yaml).")
        return
    plot(results, output / "task_vs_retention.png")
    rank_zero_info(f"Wrote {results_path}, {output / 'results.md'} and {output / 'task_vs_retention.png'}")


if __name__ == "__main__":
    main()
