"""Building the model a run trains or a checkpoint holds: the compact one or a backbone one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import torch

from wallwm.trainer.model import Mode, ModelConfig, WorldActionModel

if TYPE_CHECKING:
    from wallwm.trainer.backbone.config import BackboneConfig
    from wallwm.trainer.backbone.model import BackboneWorldActionModel

#: Either model: both train through ``forward`` and act through ``act`` / ``plan_next``.
ActionModel: TypeAlias = "WorldActionModel | BackboneWorldActionModel"


def new_model(
    cfg: ModelConfig,
    mode: Mode,
    stats: dict[str, Any] | None,
    backbone: BackboneConfig | None = None,
    weights_dtype: torch.dtype = torch.float32,
) -> ActionModel:
    """The compact model, or -- with ``backbone`` -- the model on that pretrained VLM."""
    if backbone is None:
        return WorldActionModel(cfg, mode, stats)
    from wallwm.trainer.backbone.model import BackboneWorldActionModel

    return BackboneWorldActionModel(cfg, mode, stats, backbone, weights_dtype)


def checked_backbone(
    recorded: dict[str, Any], source: str, path: str | None = None
) -> BackboneConfig:
    """A checkpoint's backbone, at ``path`` if given (another machine), checked by content.

    The directory's fingerprint must be the one the run trained on: the checkpoint holds only
    what trained (adapters, expert, heads), which mean nothing on top of other base weights.
    """
    from wallwm.trainer.backbone.config import BackboneConfig, backbone_fingerprint

    config = BackboneConfig(**{**recorded, "path": path or recorded["path"]})
    found = backbone_fingerprint(config.path)
    if found != config.fingerprint:
        raise ValueError(
            f"{source}: trained on the backbone {recorded['path']} with fingerprint "
            f"{config.fingerprint}, but {config.path} has {found} (other weights, tokenizer or "
            "processor); give the same model directory (--backbone DIR)"
        )
    return config


def model_from_checkpoint(
    state: dict[str, Any], source: str, backbone_path: str | None = None
) -> ActionModel:
    """The checkpoint's model with its EMA weights (what a policy serves), on the CPU."""
    backbone = state.get("backbone")
    model = new_model(
        ModelConfig(**state["model_config"]),
        state["mode"],
        state.get("stats"),
        checked_backbone(backbone, source, backbone_path) if backbone else None,
    )
    model.load_state_dict(state["ema"]["shadow"])
    return model
