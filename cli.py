"""Command-line entry point: ``adaptground {fit,validate,test,predict} --config CONFIG.yaml``."""

from __future__ import annotations

from functools import partial, update_wrapper
from pathlib import Path
from types import MethodType
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI, instantiate_class
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

# Values that must agree between the model and the data module. Each link applies when both
# the chosen model class and the chosen data module class have the argument.
LINKED_ARGUMENTS = [
    ("model.init_args.model_name_or_path", "data.init_args.tokenizer"),
    ("data.init_args.feature_dim", "model.init_args.feature_dim"),
]


def trainable_parameter_groups(module: LightningModule) -> list[Any]:
    """Return what an optimiser is built over: the module's own parameter groups if it defines
    ``optimizer_parameter_groups()``, else every parameter with ``requires_grad``."""
    if hasattr(module, "optimizer_parameter_groups"):
        return module.optimizer_parameter_groups()
    return [parameter for parameter in module.parameters() if parameter.requires_grad]


def _configure_from_cli(module: LightningModule, optimizer_init: Any, scheduler_init: Any) -> Any:
    optimizer = instantiate_class(trainable_parameter_groups(module), optimizer_init)
    scheduler = instantiate_class(optimizer, scheduler_init) if scheduler_init else None
    return LightningCLI.configure_optimizers(module, optimizer, scheduler)


class SuiteCLI(LightningCLI):
    """LightningCLI with subclass mode for model and data, linked arguments, and optimisers
    that see trainable parameters only.

    ``--optimizer`` and ``--lr_scheduler`` are instantiated when Lightning calls
    ``configure_optimizers``, after ``configure_model`` has built the network and frozen its
    pre-trained weights, so frozen weights never reach the optimiser.

    With ``--ckpt_path`` the model is still built from the config and the command line. A
    warning names each model value that differs from the one stored in the checkpoint, because
    Lightning's own CLI would replace such values with the checkpoint's without a message.
    """

    def add_arguments_to_parser(self, parser) -> None:
        for source, target in LINKED_ARGUMENTS:
            parser.link_arguments(source, target)

    def after_fit(self) -> None:
        trainer = self.trainer
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and (checkpoint.last_model_path or checkpoint.best_model_path):
            rank_zero_info(f"Last checkpoint: {checkpoint.last_model_path or '-'}; best: {checkpoint.best_model_path or '-'}")
        if trainer.log_dir:
            rank_zero_info(f"Logs and the run's config.yaml: {trainer.log_dir}")

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        checkpoint = torch.load(ckpt_path, weights_only=True, map_location="cpu", mmap=True)  # tensors stay on disk
        stored = checkpoint.get("hyper_parameters", {})
        init_args = self.config[subcommand].get("model", {}).get("init_args")
        if not stored or init_args is None:
            return
        differences = [
            f"{key}: {stored[key]!r} in the checkpoint, {value!r} in this run"
            for key, value in init_args.as_dict().items()
            if key in stored and stored[key] != value
        ]
        if differences:
            rank_zero_warn(
                f"Model values of this run differ from those saved in {ckpt_path}, and the run uses its own "
                f"(config and command line): " + "; ".join(differences)
                + ". Loading the checkpoint fails if these values change the adapter shapes."
            )

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        if not self.auto_configure_optimizers:
            return
        optimizer_init = self._get(self.config_init, "optimizer", default=None)
        if not optimizer_init:
            return  # the module's own configure_optimizers applies
        scheduler_init = self._get(self.config_init, "lr_scheduler", default=None)
        # A partial of module-level functions stays picklable for ddp_spawn.
        configure = partial(_configure_from_cli, optimizer_init=optimizer_init, scheduler_init=scheduler_init)
        update_wrapper(configure, _configure_from_cli)  # Lightning's is_overridden reads __code__
        self.model.configure_optimizers = MethodType(configure, self.model)


def build_cli(args: list[str] | None = None, run: bool = True) -> SuiteCLI:
    """Parse ``args`` (default ``sys.argv[1:]``), build the model, data and trainer, and run the
    subcommand unless ``run`` is false. Returns the CLI object for inspection."""
    return SuiteCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Run the suite's CLI; ``args`` replaces ``sys.argv[1:]``."""
    build_cli(args)


if __name__ == "__main__":
    main()
