"""Every shipped config parses, and every trainer config composes with every demo config."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml

import cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
METHOD_CONFIGS = sorted(path for path in CONFIGS.glob("*/*.yaml") if path.parent.name != "trainer")
TRAINER_CONFIGS = sorted((CONFIGS / "trainer").glob("*.yaml"))
DEMO_CONFIGS = sorted(CONFIGS.glob("*/demo.yaml"))
OVERLAYS = {"gsm8k_cpu_local.yaml": "gsm8k.yaml"}  # overlay -> the config it is composed with


def contains(actual, expected) -> bool:
    """Whether ``actual`` equals ``expected``, or, for dicts, has all of its items (recursively)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(key in actual and contains(actual[key], value) for key, value in expected.items())
    return actual == expected


def print_config(*paths: Path) -> dict:
    arguments = ["fit"]
    for path in paths:
        arguments += ["--config", str(path)]
    output = io.StringIO()
    with contextlib.redirect_stdout(output), pytest.raises(SystemExit) as exit_info:
        cli.build_cli(arguments + ["--print_config"])
    assert exit_info.value.code in (0, None), output.getvalue()[-2000:]
    return yaml.safe_load(output.getvalue())


@pytest.mark.parametrize("path", METHOD_CONFIGS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_method_config_parses(path):
    paths = [path.with_name(OVERLAYS[path.name]), path] if path.name in OVERLAYS else [path]
    config = print_config(*paths)
    assert config["model"]["class_path"].startswith("lightning_modules.")
    assert config["data"]["class_path"].startswith("datamodules.")


@pytest.mark.parametrize("trainer_path", TRAINER_CONFIGS, ids=lambda path: path.stem)
@pytest.mark.parametrize("demo_path", DEMO_CONFIGS, ids=lambda path: path.parent.name)
def test_trainer_config_composes(demo_path, trainer_path):
    config = print_config(demo_path, trainer_path)
    expected = yaml.safe_load(trainer_path.read_text())["trainer"]
    for key, value in expected.items():
        assert contains(config["trainer"][key], value), f"trainer.{key} from {trainer_path.name} was not applied"
    demo = yaml.safe_load(demo_path.read_text())
    assert config["model"]["class_path"] == demo["model"]["class_path"]
