"""Decoding, the engine every method shares: KV-cached batched generation and the latent-thought loop."""
