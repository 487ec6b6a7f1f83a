"""raedit: Diffusion Transformers with Representation Autoencoders (arXiv 2510.11690)."""

__version__ = "0.1.0"
