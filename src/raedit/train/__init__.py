"""Training machinery both stages share.

config       dataclasses the stage configs nest (optimizer, schedule, EMA, checkpoints, loop)
distributed  torchrun / single-process setup, DDP and FSDP2 wrapping, gradient-sync control
precision    TF32 matmuls, bf16 autocast
optim        AdamW (fused where possible), gradient clipping
schedules    warm-up, cosine, constant-then-linear-decay learning rates
ema          exponential moving average of weights
sampling     per-epoch shuffled shards of the data, resumable mid-epoch
checkpoint   atomic safetensors + JSON checkpoints, finding the newest complete one
rundir       run directory layout, image grids
tracking     log / TensorBoard / wandb metrics, the progress bar
loop         the generic loop: accumulation, phases, checkpoints, resume, NaN and signal stops
"""
