"""Tokenizers: the offline byte-level tokenizer of the embedded default, and special tokens.

The default tokenizer maps every byte to one token (id = byte value), so digits are single
tokens, any text (even text never seen in training) can be encoded, and nothing is downloaded.
It is a Hugging Face ``tokenizers`` object saved as ``tokenizer.json`` and loads with
``PreTrainedTokenizerFast`` / ``AutoTokenizer``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD, EOS, BOT, EOT, LATENT, PAUSE = "<pad>", "<eos>", "<bot>", "<eot>", "<latent>", "<pause>"
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
    tok.add_special_tokens([PAD, EOS, *LATENT_SPECIALS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=EOS,
        additional_special_tokens=LATENT_SPECIALS,
        padding_side="left",
        model_max_length=1_000_000,
    )


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    eos: int
    bot: int
    eot: int
    latent: int
    pause: int


def ensure_special_tokens(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add pad (if missing) and the latent special tokens; return how many tokens were added."""
    added = 0
    if tokenizer.eos_token is None:
        added += tokenizer.add_special_tokens({"eos_token": EOS})
    if tokenizer.pad_token is None:
        added += tokenizer.add_special_tokens({"pad_token": PAD})
    missing = [t for t in LATENT_SPECIALS if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        added += tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    tokenizer.padding_side = "left"
    return added


def special_ids(tokenizer: PreTrainedTokenizerBase) -> SpecialIds:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in LATENT_SPECIALS}
    return SpecialIds(
        pad=tokenizer.pad_token_id,
        eos=tokenizer.eos_token_id,
        bot=ids[BOT],
        eot=ids[EOT],
        latent=ids[LATENT],
        pause=ids[PAUSE],
    )
