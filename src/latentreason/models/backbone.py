"""Backbones: the tiny from-scratch default, or any Hugging Face causal LM.

``load_backbone(ModelConfig)`` returns a :class:`Backbone` (model + tokenizer + special-token
ids). ``name`` is ``tiny-gpt2`` / ``tiny-llama`` (built locally, random init, byte tokenizer) or
a Hugging Face id / local path loaded with ``AutoModelForCausalLM`` / ``AutoTokenizer``; a
Hugging Face model gets the special tokens of a layout (``models.tokenizer.LAYOUTS``: the
project's, or the official CODI / Coconut vocabularies) and its embeddings grow, the new rows
starting from the mean of the old ones (as transformers' resize does for the official code) or
from a given token. Nothing below
branches on the model class: embeddings come from ``get_input_embeddings()``, latents go in
through ``inputs_embeds``, caches are ``transformers`` ``Cache`` objects.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    Conv1D,
    GPT2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from latentreason.errors import CheckpointError, ConfigError
from latentreason.models.tokenizer import LAYOUTS, LATENT_SPECIALS, TINY_TOKENIZERS, SpecialIds, build_tiny_tokenizer, ensure_special_tokens, special_ids

TINY = ("tiny-gpt2", "tiny-llama")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


@dataclass
class ModelConfig:
    """Which backbone to use and, for the tiny ones, its size."""

    #: ``tiny-gpt2`` | ``tiny-llama`` | a Hugging Face model id or local path
    name: str = "tiny-gpt2"
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 256
    #: the tiny models' tokenizer: byte (every byte a token; any text) | digits (one token per space-separated
    #: digit or symbol: iCoT's multiplication data at half the length; models/tokenizer.py)
    tokenizer: str = "byte"
    dropout: float = 0.0
    #: weights dtype: auto | float32 | bfloat16 | float16 | float64 (auto: the checkpoint's; float32 for a tiny model)
    dtype: str = "float32"
    #: only ever set by the user: lets HF run code shipped with a model
    trust_remote_code: bool = False
    #: special tokens added to a Hugging Face tokenizer (models/tokenizer.py LAYOUTS): auto (what the method's
    #: config asks for: ``method_args.special_tokens``, ``project`` unless a paper preset says otherwise) |
    #: project | codi | coconut | none. The embedded byte tokenizer has every token built in.
    special_tokens: str = "auto"
    #: how rows added for new tokens start: mean (the mean of the existing rows, as the official CODI and
    #: Coconut code get from transformers' resize) | random (the model's own initialiser)
    new_token_init: str = "mean"
    #: initialise the new special-token rows from this token's embedding instead (Coconut uses "<<")
    init_new_tokens_from: str | None = None
    #: LoRA through peft (0 = off): rank, alpha, dropout, target module names (None = peft default)
    lora_r: int = 0
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: list[str] | None = None
    attn_implementation: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.name in TINY:
            for k in ("n_layer", "n_embd", "n_head", "n_positions"):
                if getattr(self, k) < 1:
                    raise ConfigError(f"model.{k} must be >= 1, got {getattr(self, k)}")
            if self.n_embd % self.n_head:
                raise ConfigError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if self.tokenizer not in TINY_TOKENIZERS:
            raise ConfigError(f"model.tokenizer must be one of {', '.join(TINY_TOKENIZERS)}, got {self.tokenizer!r}")
        if self.tokenizer != "byte" and self.name not in TINY:
            raise ConfigError(f"model.tokenizer={self.tokenizer} is for the tiny models only; {self.name!r} brings its own tokenizer")
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ConfigError(f"model.dtype must be one of auto, {', '.join(_DTYPES)}; got {self.dtype!r}")
        if self.lora_r < 0:
            raise ConfigError(f"model.lora_r must be >= 0, got {self.lora_r}")
        if self.special_tokens != "auto" and self.special_tokens not in LAYOUTS:
            raise ConfigError(f"model.special_tokens must be auto or one of {', '.join(LAYOUTS)}; got {self.special_tokens!r}")
        if self.new_token_init not in ("mean", "random"):
            raise ConfigError(f"model.new_token_init must be mean or random; got {self.new_token_init!r}")


@dataclass
class Backbone:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    ids: SpecialIds

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @property
    def num_layers(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer"))

    @property
    def max_positions(self) -> int | None:
        cfg = self.model.config
        for k in ("n_positions", "max_position_embeddings"):
            v = getattr(cfg, k, None)
            if isinstance(v, int):
                return v
        return None


def tiny_config(cfg: ModelConfig, vocab_size: int, ids: SpecialIds):
    common = dict(vocab_size=vocab_size, bos_token_id=ids.eos, eos_token_id=ids.eos, pad_token_id=ids.pad)
    if cfg.name == "tiny-gpt2":
        return GPT2Config(
            n_positions=cfg.n_positions,
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
            **common,
        )
    return LlamaConfig(
        hidden_size=cfg.n_embd,
        intermediate_size=4 * cfg.n_embd,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_head,
        max_position_embeddings=cfg.n_positions,
        attention_dropout=cfg.dropout,
        tie_word_embeddings=True,
        **common,
    )


def _init_new_rows(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n_old: int, source: str,
                   end: int | None = None) -> None:
    """Rows ``n_old:end`` of the input and output embeddings := the rows of ``source``'s first token."""
    src_ids = tokenizer(source, add_special_tokens=False).input_ids
    if not src_ids:
        raise ConfigError(f"model.init_new_tokens_from: {source!r} encodes to no token")
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[n_old:end] = emb[src_ids[0]]
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != emb.data_ptr():
            out.weight[n_old:end] = out.weight[src_ids[0]]


def init_rows_with_mean(model: PreTrainedModel, n_old: int, end: int | None = None) -> None:
    """Rows ``n_old:end`` of the input and output embeddings (and an output bias) := the mean of rows ``:n_old``.

    This is what transformers' ``resize_token_embeddings`` does by default (``mean_resizing=True``),
    which the official CODI and Coconut code rely on, minus its noise (it samples from a normal with
    the old rows' mean and 1e-9 times their covariance). By Jensen's inequality a mean-initialised
    output row's probability never exceeds the average probability of the old rows
    (exp(h·mean e) <= mean exp(h·e)), so new tokens cannot dominate the first predictions.
    """
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[n_old:end] = emb[:n_old].mean(0, keepdim=True)
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != emb.data_ptr():
            out.weight[n_old:end] = out.weight[:n_old].mean(0, keepdim=True)
        bias = getattr(out, "bias", None) if out is not None else None
        if bias is not None:
            bias[n_old:end] = bias[:n_old].mean()


def add_special_tokens(backbone: "Backbone", layout: str, cfg: ModelConfig | None = None) -> int:
    """Give a loaded backbone the special tokens of ``layout`` it lacks: add them to the tokenizer, grow
    the embeddings if needed and initialise the new tokens' rows (Coconut's layout: from ``<<``, as
    its official code; otherwise ``cfg.init_new_tokens_from``, else ``cfg.new_token_init``).
    Returns how many tokens were added."""
    cfg = cfg or ModelConfig()
    tokenizer, model = backbone.tokenizer, backbone.model
    n_rows = model.get_input_embeddings().weight.shape[0]
    # a tokenizer may already hold more tokens than the model has rows (e.g. a pad token its class adds at
    # load time): those rows are new too
    n_old = min(len(tokenizer), n_rows)
    ensure_special_tokens(tokenizer, layout)
    n_new = len(tokenizer)
    if n_new > n_old:
        if n_new > n_rows:
            model.resize_token_embeddings(n_new, mean_resizing=False)
        source = cfg.init_new_tokens_from or ("<<" if layout == "coconut" else None)
        if source:
            _init_new_rows(model, tokenizer, n_old, source, end=n_new)
        elif cfg.new_token_init == "mean":
            init_rows_with_mean(model, n_old, end=n_new)
    if model.config.pad_token_id is None or n_new > n_old:
        model.config.pad_token_id = tokenizer.pad_token_id
    backbone.ids = special_ids(tokenizer)
    return n_new - n_old


def load_backbone(cfg: ModelConfig, seed: int | None = None, layout: str | None = None) -> Backbone:
    """Build the tiny default or load a Hugging Face causal LM, with special tokens added.

    ``layout``: the special-token layout for a Hugging Face model (``cfg.special_tokens`` unless
    that is ``auto``; ``project`` when neither says).
    """
    cfg.validate()
    if cfg.name in TINY:
        tokenizer = build_tiny_tokenizer(cfg.tokenizer)
        ids = special_ids(tokenizer)
        if seed is not None:
            torch.manual_seed(seed)
        hf_cfg = tiny_config(cfg, len(tokenizer), ids)
        if cfg.attn_implementation:
            hf_cfg._attn_implementation = cfg.attn_implementation
        model = AutoModelForCausalLM.from_config(hf_cfg)
        if cfg.dtype not in ("auto", "float32"):  # built in float32 ("auto" for a model built here)
            model.to(_DTYPES[cfg.dtype])
        if cfg.init_new_tokens_from:
            _init_new_rows(model, tokenizer, len(tokenizer) - 2 - len(LATENT_SPECIALS), cfg.init_new_tokens_from)
        return Backbone(model, tokenizer, ids)
    if cfg.special_tokens != "auto":
        layout = cfg.special_tokens
    layout = layout or "project"
    path = resolve_model_name(cfg.name)
    kw: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"model.name {path!r}: cannot load a tokenizer ({e}); use tiny-gpt2, tiny-llama, "
            "a Hugging Face model id or a local directory"
        ) from None
    mkw = dict(kw)
    if cfg.dtype != "auto":
        mkw["dtype"] = _DTYPES[cfg.dtype]
    else:
        mkw["dtype"] = "auto"
    if cfg.attn_implementation:
        mkw["attn_implementation"] = cfg.attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **mkw)
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.name {path!r}: cannot load a causal LM ({e})") from None
    backbone = Backbone(model, tokenizer, special_ids(tokenizer))
    add_special_tokens(backbone, layout, cfg)
    return backbone


def resolve_model_name(name: str) -> str:
    """A local model directory (which must exist) or a Hugging Face id, checked before anything is loaded.

    Anything that is clearly a path (absolute, ``./``, ``../``, ``~``, more than one ``/``, or an
    existing file) must be an existing directory: a missing path is an error, never a download.
    A name like ``gpt2`` or ``org/model`` that does not exist locally is a Hub id.
    """
    if not name or not name.strip():
        raise ConfigError("model.name: empty; use tiny-gpt2, tiny-llama, a Hugging Face model id or a local directory")
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ConfigError(f"model.name {name!r}: is a file; expected a model directory (config.json, weights, tokenizer)")
        if not (p / "config.json").is_file():
            raise ConfigError(f"model.name {name!r}: directory has no config.json; not a Hugging Face model directory")
        return str(p)
    path_like = (
        p.is_absolute()
        or name.startswith(("./", "../", "~", ".\\"))
        or name.count("/") > 1
        or "\\" in name
    )
    if path_like:
        raise ConfigError(
            f"model.name {name!r}: no such directory (a local model path must exist; nothing is downloaded for a path)"
        )
    return name


def maybe_apply_lora(backbone: Backbone, cfg: ModelConfig) -> Backbone:
    """Wrap the model in a peft LoRA model when ``cfg.lora_r > 0`` (new token rows stay frozen)."""
    if cfg.lora_r <= 0:
        return backbone
    from peft import LoraConfig, get_peft_model  # peft takes seconds to import; only LoRA runs need it

    # GPT-2-style Conv1D layers store their weight transposed: tell peft (it would otherwise warn and switch)
    conv1d = any(isinstance(m, Conv1D) for m in backbone.model.modules())
    lcfg = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_targets,
        task_type="CAUSAL_LM",
        fan_in_fan_out=conv1d,
    )
    with warnings.catch_warnings():
        # peft 0.21's PeftModel.__init__ reads transformers 5's deprecated `is_gradient_checkpointing` property, which
        # warns on every LoRA run; this package never reads it (nothing else is silenced here)
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        backbone.model = get_peft_model(backbone.model, lcfg)
    return backbone


def save_backbone(backbone: Backbone, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write the backbone (safetensors) and its tokenizer; ``state_dict``: full weights to write
    instead of the module's own (a model sharded by FSDP holds only a shard)."""
    model = backbone.model
    if hasattr(model, "merge_and_unload"):  # peft: store merged full weights, loadable without peft
        if state_dict is not None:
            raise ConfigError("LoRA (model.lora_r > 0) cannot be saved from a sharded (FSDP) model; train it with DDP")
        model = copy.deepcopy(model).merge_and_unload()
    if state_dict is None:
        model.save_pretrained(directory, safe_serialization=True)
    else:
        model.save_pretrained(directory, safe_serialization=True, state_dict=state_dict)
    backbone.tokenizer.save_pretrained(directory)


def load_backbone_dir(
    directory: Path, dtype: str = "float32", trust_remote_code: bool = False, attn_implementation: str | None = None
) -> Backbone:
    """Load a saved backbone strictly: any missing, unexpected or mismatched weight is an error.

    Only safetensors weights are read (never a pickled ``pytorch_model.bin``). ``attn_implementation``: transformers'
    attention kernel (None: its default), as ``model.attn_implementation`` asks for a fresh backbone.
    """
    if not (directory / "model.safetensors").is_file() and not (directory / "model.safetensors.index.json").is_file():
        raise CheckpointError(f"{directory}: no model.safetensors in the checkpoint")
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{directory}: cannot load tokenizer/config ({e})") from None
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and vocab < len(tokenizer):
        raise CheckpointError(
            f"{directory}: tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {vocab} rows"
        )
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            directory,
            output_loading_info=True,
            use_safetensors=True,
            # report mismatched shapes in the loading info (then refused below) instead of a bare error
            ignore_mismatched_sizes=True,
            dtype=_DTYPES.get(dtype, torch.float32) if dtype != "auto" else "auto",
            trust_remote_code=trust_remote_code,
            **({"attn_implementation": attn_implementation} if attn_implementation else {}),
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise CheckpointError(f"{directory}: cannot load model weights ({_short(e)})") from None
    problems = []
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        vals = sorted(info.get(key) or [], key=str)
        if key == "mismatched_keys":  # (name, shape on disk, shape the config asks for)
            vals = [f"{v[0]} {tuple(v[1])} on disk vs {tuple(v[2])} from config.json" if isinstance(v, tuple) else v for v in vals]
        if vals:
            problems.append(f"{key.replace('_', ' ')}: {', '.join(map(str, vals[:3]))}{' ...' if len(vals) > 3 else ''}")
    if problems:
        raise CheckpointError(f"{directory}: strict load failed ({'; '.join(problems)})")
    tokenizer.padding_side = "left"
    return Backbone(model, tokenizer, special_ids(tokenizer))


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:300] if s else type(e).__name__


#: attribute paths (relative to ``model.base_model``, then to ``model``) tried in order
FINAL_NORM_PATHS = (
    "ln_f",  # GPT-2, GPT-J, GPT-Neo, BLOOM, CodeGen
    "norm",  # LLaMA, Mistral, Qwen, Gemma, Phi-3, OLMo
    "final_layer_norm",  # GPT-NeoX, Pythia
    "final_layernorm",  # Phi, ChatGLM
    "decoder.final_layer_norm",  # OPT
    "decoder.norm",
    "norm_f",  # Mamba, MPT
    "ln_out",  # RWKV
    "transformer.ln_f",
    "model.norm",
)


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def find_final_norm(model: nn.Module) -> nn.Module:
    """The final normalisation layer of a causal LM (before the LM head)."""
    roots = [getattr(model, "base_model", None), model]
    for root in roots:
        if root is None:
            continue
        for path in FINAL_NORM_PATHS:
            mod = _get_path(root, path)
            if isinstance(mod, nn.Module):
                return mod
    raise ConfigError(
        f"cannot find the final norm of {type(model).__name__}; looked for "
        f"{', '.join(FINAL_NORM_PATHS)} on model.base_model and model"
    )


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
