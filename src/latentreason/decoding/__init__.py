"""Decoding: KV-cached batched generation, the latent-thought loop, soft-thinking samplers."""

from latentreason.decoding.generate import DecodeState, greedy_continue, greedy_generate, greedy_reference, left_pad, prefill

__all__ = ["DecodeState", "greedy_continue", "greedy_generate", "greedy_reference", "left_pad", "prefill"]
