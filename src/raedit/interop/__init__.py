"""Interoperability with the official RAE release: key renames from its checkpoints to raedit's modules."""
