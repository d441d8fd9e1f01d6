"""Models: backbone building/loading, tokenizers, the KV-cache API, the latent projection."""
