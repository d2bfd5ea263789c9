"""What a backbone run trains: the VLM directory, its fingerprint, and how it is fine-tuned."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

#: The files that make a model directory what it is (weights, architecture, tokenizer,
#: image processing, chat template). README files and caches do not count.
FINGERPRINTED = (
    "*.safetensors", "*.bin", "config.json", "tokenizer.json", "tokenizer_config.json",
    "preprocessor_config.json", "processor_config.json", "chat_template.jinja",
    "chat_template.json",
)  # fmt: skip


@dataclass(frozen=True)
class BackboneConfig:
    """A pretrained vision-language backbone and how a run trains it.

    ``lora_rank`` > 0 trains LoRA adapters on the language model's linear layers (the base
    weights stay frozen, in ``weights_dtype``); 0 trains the whole language model.
    ``train_vision`` also trains the vision tower. ``event_tokens`` bounds the event text
    unified mode decodes at inference (and the description it is taught, in tokens).
    """

    path: str
    fingerprint: str
    lora_rank: int = 16
    lora_alpha: int = 32
    train_vision: bool = False
    gradient_checkpointing: bool = False
    event_tokens: int = 32

    def __post_init__(self) -> None:
        """Refuse settings that cannot train (one line each)."""
        if self.lora_rank < 0:
            raise ValueError(
                f"--lora-rank must be >= 0 (0: full fine-tuning), got {self.lora_rank}"
            )
        if self.event_tokens < 1:
            raise ValueError(f"event_tokens must be >= 1, got {self.event_tokens}")


def backbone_fingerprint(path: str | Path) -> str:
    """A content hash of a model directory (weights, config, tokenizer, processor, template).

    What a checkpoint keeps next to the backbone's path, so loading it on top of different
    weights -- another model, or the same directory re-downloaded at another revision -- is
    refused instead of silently producing another policy. Reads every weight byte once
    (seconds for a 2B model).
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"--backbone {path}: no such directory")
    files = sorted({f for pattern in FINGERPRINTED for f in root.glob(pattern) if f.is_file()})
    if not any(f.suffix in (".safetensors", ".bin") for f in files):
        raise ValueError(
            f"--backbone {path}: no model weights (*.safetensors) in it -- a local Hugging Face "
            "model directory is needed (wallwm never downloads one)"
        )
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 23):
                digest.update(chunk)
    return digest.hexdigest()[:16]
