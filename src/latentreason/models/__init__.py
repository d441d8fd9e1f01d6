"""Models: backbone building/loading, tokenizer, latent projection, shortcut routers/adapters."""

from latentreason.models.backbone import Backbone, ModelConfig, load_backbone, load_backbone_dir, save_backbone
from latentreason.models.tokenizer import SpecialIds, build_byte_tokenizer

__all__ = ["Backbone", "ModelConfig", "SpecialIds", "build_byte_tokenizer", "load_backbone", "load_backbone_dir", "save_backbone"]
