"""Data: one :class:`~latentreason.data.example.Example` type, loaders per format, named sets and their
download, the procedural default task and the multiplication generator, answer extraction."""
