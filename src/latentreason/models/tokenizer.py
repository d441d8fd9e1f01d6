"""Tokenizers: the offline tokenizers of the tiny from-scratch models, and special tokens.

The default tokenizer maps every byte to one token (id = byte value), so digits are single
tokens, any text (even text never seen in training) can be encoded, and nothing is downloaded.
The ``digits`` tokenizer is for data written as space-separated symbols (iCoT's multiplication,
``5 6 3 2 * 7 4 3 4``): one token per word, the words being digits, single punctuation marks and
the answer markers, so a 4x4 multiplication with its CoT is 67 tokens instead of 128 bytes; a
word outside that vocabulary is an error naming the example (``models.tokenizer.check_known``).
Both are Hugging Face ``tokenizers`` objects saved as ``tokenizer.json`` that load with
``PreTrainedTokenizerFast`` / ``AutoTokenizer``.
"""

from __future__ import annotations

from dataclasses import dataclass

import string

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from latentreason.errors import ConfigError, DataError

PAD, EOS, BOT, EOT, LATENT, PAUSE, UNK = "<pad>", "<eos>", "<bot>", "<eot>", "<latent>", "<pause>", "<unk>"
#: the tiny models' tokenizers (``model.tokenizer``)
TINY_TOKENIZERS = ("byte", "digits")
#: the words of the ``digits`` tokenizer: digits, single ASCII punctuation marks, the answer markers
DIGIT_WORDS = [*string.digits, *string.punctuation, "####", "###", "||"]
#: special tokens every backbone gets (beyond pad/eos), in this order
LATENT_SPECIALS = [BOT, EOT, LATENT, PAUSE]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens, id = byte) plus pad/eos and the latent specials."""
    b2u = _bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return _with_specials(tok)


def _with_specials(tok: Tokenizer, **extra: str) -> PreTrainedTokenizerFast:
    """``tok`` with pad/eos and the latent specials, as a left-padding Hugging Face tokenizer."""
    tok.add_special_tokens([PAD, EOS, *LATENT_SPECIALS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=EOS,
        additional_special_tokens=LATENT_SPECIALS,
        padding_side="left",
        model_max_length=1_000_000,
        **extra,
    )


def build_digit_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over whitespace-separated digits and symbols (``DIGIT_WORDS``), plus pad/eos,
    the latent specials and ``<unk>``; decoding joins words with single spaces, so iCoT's data round-trips."""
    vocab = {w: i for i, w in enumerate(DIGIT_WORDS)}
    vocab[UNK] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return _with_specials(tok, unk_token=UNK)


def build_tiny_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    if kind not in TINY_TOKENIZERS:
        raise ConfigError(f"model.tokenizer must be one of {', '.join(TINY_TOKENIZERS)}, got {kind!r}")
    return build_byte_tokenizer() if kind == "byte" else build_digit_tokenizer()


def check_known(tokenizer: PreTrainedTokenizerBase, texts: list[str], ids: list[list[int]], where) -> None:
    """A clear error when the ``digits`` tokenizer meets a word outside its vocabulary (it would become
    ``<unk>``); ``where(i)`` names the example text ``i`` belongs to. Other tokenizers encode any text."""
    if tokenizer.unk_token != UNK or tokenizer.convert_tokens_to_ids(UNK) is None:
        return
    unk = tokenizer.convert_tokens_to_ids(UNK)
    for i, row in enumerate(ids):
        if unk in row:
            bad = [w for w in texts[i].split() if tokenizer.convert_tokens_to_ids(w) == unk]
            raise DataError(
                f"{where(i)}: the digits tokenizer (model.tokenizer=digits) has no token for {bad[0]!r}; it reads "
                "space-separated digits and symbols only (use model.tokenizer=byte for other text)"
            )


#: special-token layouts a Hugging Face tokenizer can get (the embedded byte tokenizer has every
#: token built in): which tokens are added, in which order, and what stands in for padding.
#:
#: * ``project`` — pad (when missing), ``<bot>``, ``<eot>``, ``<latent>``, ``<pause>``: every method works;
#: * ``codi`` — pad, ``<bot>``, ``<eot>`` at ids V, V+1, V+2, the official CODI code's vocabulary;
#: * ``coconut`` — pad = EOS, ``<bot>``, ``<eot>``, ``<latent>`` at V, V+1, V+2 (the official Coconut code adds
#:   ``<|start-latent|>``, ``<|end-latent|>``, ``<|latent|>`` in this order; names do not matter, ids do);
#: * ``none`` — nothing added, pad = EOS: the official CoT-SFT / iCoT vocabulary (no latent method fits it).
LAYOUTS = ("project", "codi", "coconut", "none")
_LAYOUT_TOKENS = {"project": LATENT_SPECIALS, "codi": [BOT, EOT], "coconut": [BOT, EOT, LATENT], "none": []}


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    eos: int
    #: None when the vocabulary layout has no such token (see ``LAYOUTS``)
    bot: int | None
    eot: int | None
    latent: int | None
    pause: int | None


def ensure_special_tokens(tokenizer: PreTrainedTokenizerBase, layout: str = "project") -> int:
    """Add what ``layout`` needs that the tokenizer lacks; return how many tokens were added.

    Tokens the tokenizer already has are kept where they are (a checkpoint trained with a larger
    layout keeps its extra rows).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown special-token layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    added = 0
    if tokenizer.eos_token is None:
        added += tokenizer.add_special_tokens({"eos_token": EOS})
    if tokenizer.pad_token is None:
        if layout in ("coconut", "none"):
            tokenizer.pad_token = tokenizer.eos_token
        else:
            added += tokenizer.add_special_tokens({"pad_token": PAD})
    vocab = tokenizer.get_vocab()
    missing = [t for t in _LAYOUT_TOKENS[layout] if t not in vocab]
    if missing:
        added += tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    tokenizer.padding_side = "left"
    return added


def special_ids(tokenizer: PreTrainedTokenizerBase) -> SpecialIds:
    vocab = tokenizer.get_vocab()
    ids = {t: vocab.get(t) for t in LATENT_SPECIALS}
    return SpecialIds(
        pad=tokenizer.pad_token_id,
        eos=tokenizer.eos_token_id,
        bot=ids[BOT],
        eot=ids[EOT],
        latent=ids[LATENT],
        pause=ids[PAUSE],
    )


def require_ids(ids: SpecialIds, names: tuple[str, ...], who: str) -> None:
    """A clear error when a method needs special tokens the model's vocabulary lacks."""
    missing = [n for n in names if getattr(ids, n) is None]
    if missing:
        raise ConfigError(
            f"{who} needs the special token(s) {', '.join('<' + n + '>' for n in missing)}, which this model's "
            "vocabulary lacks (it was built with a smaller special-token layout); use model.special_tokens=project "
            "or the layout of the method's paper preset"
        )
