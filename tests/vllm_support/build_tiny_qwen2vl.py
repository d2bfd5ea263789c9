"""Build a tiny random-weight Qwen2-VL model directory for the real-vLLM tests.

Runs inside the vLLM virtual environment (``.venv-vllm``) for the vLLM tests and in the main one
for the backbone tests: ``python build_tiny_qwen2vl.py OUT``.
No model hub is reachable, so the byte-level BPE tokenizer is trained here on a small corpus
(with Qwen's special tokens and chat template) and the weights are random but seeded, so the
directory is identical on every build. vLLM's CPU attention needs head size 64 (text) and 32
(vision); a small ``max_pixels`` keeps one image at <= 16 image tokens.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    '{"caption": "grasp the red puck", "verb": "grasp", "object": "red puck", "target": null, '
    '"done_state": "the puck is held"}',
    "move the puck to the goal, open the drawer, press the button, reach the goal position",
    "You caption short clips of a robot manipulation episode. Task instruction: event of lasting",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?'\"()[]{}-_/\\ \n",
]


def build(out: Path, family: str = "qwen2_vl") -> None:
    """Write the model directory; ``family``: ``qwen2_vl`` or ``qwen2_5_vl``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
    )

    # The main venv has no torchvision (PyPI's builds are CUDA ones; the CPU torch would not
    # load their kernels): the PIL image processor then, and no video processor -- wallwm's
    # trainer reads images only. The vLLM venv has torchvision and gets both.
    try:
        import torchvision  # noqa: F401
        from transformers import Qwen2VLImageProcessor as ImageProcessor
        from transformers import Qwen2VLVideoProcessor as VideoProcessor
    except ImportError:
        from transformers import Qwen2VLImageProcessorPil as ImageProcessor

        VideoProcessor = None

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL[1:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}
    vocab = len(tokenizer)

    torch.manual_seed(0)
    text_config = {
        "vocab_size": vocab,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": [8, 12, 12]},
        "tie_word_embeddings": True,
        "eos_token_id": ids["<|im_end|>"],
        "bos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    tokens = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": True,
    }
    patches = {
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
    }
    if family == "qwen2_5_vl":  # windowed vision attention, a full-attention last block
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        vision = {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2,
                  "out_hidden_size": 128, "window_size": 56,
                  "fullatt_block_indexes": [1]}  # fmt: skip
        config: Any = Qwen2_5_VLConfig(
            text_config=text_config, vision_config={**vision, **patches}, **tokens
        )
        model: Any = Qwen2_5_VLForConditionalGeneration(config)
    else:
        vision = {"depth": 1, "embed_dim": 64, "hidden_size": 128, "num_heads": 2, "mlp_ratio": 2}
        config = Qwen2VLConfig(
            text_config=text_config,
            vision_config={**vision, **patches},
            vocab_size=vocab,
            hidden_size=128,
            eos_token_id=ids["<|im_end|>"],
            bos_token_id=ids["<|endoftext|>"],
            pad_token_id=ids["<|endoftext|>"],
            **tokens,
        )
        model = Qwen2VLForConditionalGeneration(config)
    model = model.to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    sizes = {
        "min_pixels": 28 * 28 * 4,
        "max_pixels": 112 * 112,
        "patch_size": 14,
        "merge_size": 2,
        "temporal_patch_size": 2,
    }
    image_processor = ImageProcessor(**sizes)
    if VideoProcessor is not None:
        processor = Qwen2VLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=VideoProcessor(**sizes),
            chat_template=CHAT_TEMPLATE,
        )
        processor.save_pretrained(out)
    else:  # what a processor directory holds, minus the video part
        image_processor.save_pretrained(out)
        (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    tokenizer.save_pretrained(out)
    gen = {
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "bos_token_id": ids["<|endoftext|>"],
    }
    (out / "generation_config.json").write_text(json.dumps(gen))


if __name__ == "__main__":
    build(Path(sys.argv[1]))
    print("built", sys.argv[1])
