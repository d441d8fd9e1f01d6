"""Soft Thinking and Stochastic Soft Thinking (SPEC §3.6, §4): samplers, settings, the decoding loop, the
entry point for a trained method, noisy continuous thoughts, the study and the path-share experiment."""
