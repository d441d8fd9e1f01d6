"""Methods: one module per method (loss + generate), the registry, and a folder for a method with more
than a loss (System-1.5, adaptive thinking)."""
