"""Adaptive latent thinking (``codi_adaptive``): the halting head and stop rules, the method."""
