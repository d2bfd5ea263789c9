"""Loading a local vision-language model and turning observations into its inputs.

Everything model-family specific lives here. A backbone is a local Hugging Face directory
loaded with ``transformers`` (never from a hub). Its own chat template lays out the prompt:
one image per camera, then the instruction and -- in the text-conditioned modes -- the event
being executed; unified mode appends the event description as the assistant's answer.

Two prompt encoders, one contract (:class:`PromptEncoder`): the model's own processor
(``AutoProcessor``), and, where the processor cannot be built -- Qwen2-VL's processor insists
on its video half, which needs torchvision, and CPU-only machines with PyPI's CUDA torchvision
have none -- the same tokens built from the tokenizer and the image processor: each image
placeholder expanded to ``prod(grid_thw) / merge_size**2`` tokens, which is what the Qwen2-VL
and Qwen2.5-VL processors do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

#: The modality id of image tokens in ``mm_token_type_ids`` (transformers' convention).
IMAGE_TYPE = 1


@dataclass(frozen=True)
class Prompt:
    """One sample's prompt: its images (uint8 CHW, camera order), user text, optional answer."""

    images: Sequence[torch.Tensor]
    text: str
    answer: str | None = None


class PromptEncoder(Protocol):
    """Prompts to model inputs (left-padded), and the positions of each answer's tokens."""

    #: The model's tokenizer (decoding generated text, embedding texts).
    tokenizer: Any

    def __call__(self, prompts: Sequence[Prompt]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Model inputs (``input_ids``, ``attention_mask``, ``pixel_values``, ...) and (B, T).

        The second tensor is True at the tokens of each prompt's answer (its text and the end
        token): the tokens unified mode decodes.
        """
        ...

    def images(self, images: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The vision tower's inputs for images alone (``pixel_values``, ``image_grid_thw``)."""
        ...


def chat_text(template_owner: Any, prompt: Prompt) -> str:
    """The prompt laid out by the model's chat template (+ answer and end token if any)."""
    content: list[dict[str, str]] = [{"type": "image"} for _ in prompt.images]
    content.append({"type": "text", "text": prompt.text})
    text: str = template_owner.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    if prompt.answer is not None:
        text += prompt.answer + _eos_text(template_owner)
    return text


def _eos_text(owner: Any) -> str:
    tokenizer = getattr(owner, "tokenizer", owner)
    return str(tokenizer.eos_token)


def _answer_mask(tokenizer: Any, prompts: Sequence[Prompt], ids_BT: torch.Tensor) -> torch.Tensor:
    """True at each answer's tokens: the last ``n`` of its (left-padded) row.

    ``n`` is the answer's length tokenised alone: the chat template ends the prompt at a
    special token or a newline, where byte-level BPE never merges across.
    """
    mask = torch.zeros_like(ids_BT, dtype=torch.bool)
    eos = tokenizer.eos_token
    for i, p in enumerate(prompts):
        if p.answer is not None:
            n = len(tokenizer(p.answer + eos, add_special_tokens=False)["input_ids"])
            mask[i, ids_BT.shape[1] - n :] = True
    return mask


class ProcessorPrompts:
    """The model's own processor (``AutoProcessor``): any family transformers supports."""

    def __init__(self, processor: Any) -> None:
        """Wrap a loaded processor (left padding: answers and generation at the row ends)."""
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.tokenizer.padding_side = "left"

    def __call__(self, prompts: Sequence[Prompt]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """See :class:`PromptEncoder`."""
        texts = [chat_text(self.processor, p) for p in prompts]
        images = [img for p in prompts for img in p.images]
        enc = self.processor(text=texts, images=images or None, return_tensors="pt", padding=True)
        inputs = {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}
        return inputs, _answer_mask(self.processor.tokenizer, prompts, inputs["input_ids"])

    def images(self, images: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """See :class:`PromptEncoder`: the processor's image processor, no text."""
        enc = self.processor.image_processor(images=list(images), return_tensors="pt")
        return {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}


class GridPrompts:
    """Qwen2-VL-style inputs from the tokenizer and the image processor (no processor class)."""

    def __init__(self, tokenizer: Any, image_processor: Any, image_token_id: int) -> None:
        """Wrap the pieces; ``image_token_id`` is the model config's image placeholder."""
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.tokenizer.padding_side = "left"
        self.image_token = tokenizer.convert_ids_to_tokens(image_token_id)
        self.image_token_id = image_token_id
        self.merge = int(getattr(image_processor, "merge_size", 2))

    def __call__(self, prompts: Sequence[Prompt]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """See :class:`PromptEncoder`."""
        images = [img for p in prompts for img in p.images]
        inputs: dict[str, torch.Tensor] = self.images(images) if images else {}
        counts = [int(g.prod()) // self.merge**2 for g in inputs.get("image_grid_thw", [])]
        texts, k = [], 0
        for p in prompts:
            parts = chat_text(self.tokenizer, p).split(self.image_token)
            text = parts[0]
            for part in parts[1:]:  # one placeholder per image, in order
                text += self.image_token * counts[k] + part
                k += 1
            texts.append(text)
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs["input_ids"], inputs["attention_mask"] = enc["input_ids"], enc["attention_mask"]
        inputs["mm_token_type_ids"] = (enc["input_ids"] == self.image_token_id).long() * IMAGE_TYPE
        return inputs, _answer_mask(self.tokenizer, prompts, inputs["input_ids"])

    def images(self, images: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """See :class:`PromptEncoder`."""
        pixels = self.image_processor(images=list(images), return_tensors="pt")
        return {"pixel_values": pixels["pixel_values"], "image_grid_thw": pixels["image_grid_thw"]}


def load_vlm(path: str | Path, dtype: torch.dtype) -> tuple[Any, PromptEncoder]:
    """The model and its prompt encoder from a local directory (one line when it is not one)."""
    import transformers

    root = str(path)
    try:
        model = transformers.AutoModelForImageTextToText.from_pretrained(
            root, dtype=dtype, local_files_only=True
        )
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"--backbone {path}: not a vision-language model transformers can load ({first})"
        ) from exc
    model.generation_config.pad_token_id = model.generation_config.pad_token_id or getattr(
        model.config, "pad_token_id", None
    )
    return model, _prompt_encoder(root, model.config)


def _prompt_encoder(root: str, config: Any) -> PromptEncoder:
    import transformers

    try:
        processor = transformers.AutoProcessor.from_pretrained(  # type: ignore[no-untyped-call]
            root, local_files_only=True
        )
        return ProcessorPrompts(processor)
    except (ImportError, AttributeError, OSError, ValueError, TypeError):
        pass  # see the module docstring: the tokens are built from the pieces below
    image_token_id = getattr(config, "image_token_id", None)
    if image_token_id is None or not Path(root, "preprocessor_config.json").is_file():
        raise ValueError(
            f"--backbone {root}: its processor cannot be loaded here and it is no Qwen2-VL-style "
            "model (image_token_id, preprocessor_config.json) whose inputs wallwm can build"
        )
    tokenizer = transformers.AutoTokenizer.from_pretrained(root, local_files_only=True)
    if tokenizer.chat_template is None:
        raise ValueError(f"--backbone {root}: its tokenizer has no chat template")
    image_processor = transformers.AutoImageProcessor.from_pretrained(root, local_files_only=True)
    return GridPrompts(tokenizer, image_processor, int(image_token_id))


def text_hidden(config: Any) -> tuple[int, int]:
    """(layers, width) of the language model."""
    text = getattr(config, "text_config", config)
    return int(text.num_hidden_layers), int(text.hidden_size)
