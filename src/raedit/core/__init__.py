"""Primitives every layer of raedit stands on; nothing here imports the rest of the package.

errors       the one user-error type (one line on the command line)
config       dataclass configs from YAML recipes (files or the shipped `raedit/recipes`) and key=value overrides
files        atomic writes (every artifact is written whole or not at all), reading state dicts
images       float <-> uint8 pixels (the one conversion behind saved images and FID), image grids
tokens       the token layout of latents: (B, h*w, C) row-major <-> (B, C, h, w)
distributed  which process this is under torchrun, and the few collectives jobs need
acceleration torch.compile with a fallback to eager, the attention kernel: speed without changing the function
"""
