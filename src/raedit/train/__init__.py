"""Training machinery both stages share, and the two stages.

config       dataclasses the stage configs nest (optimizer, schedule, EMA, checkpoints, loop)
parallel     DDP and FSDP2 wrapping, gradient-sync control, sharding a model's EMA twin like the model
precision    TF32 matmuls, bf16 autocast
optim        AdamW (fused where possible), gradient clipping, a step skipped on the device when not finite
schedules    warm-up, cosine, constant-then-linear-decay learning rates
ema          exponential moving average of weights
epoch_shards per-epoch shuffled shards of the data, resumable mid-epoch
checkpoint   atomic safetensors + JSON checkpoints, finding the newest complete one
run_dir      run directory layout
tracking     log / TensorBoard / wandb metrics, the progress bar
loop         the generic loop: accumulation, phases, sync points, checkpoints, resume, NaN and signal stops
stage1       the decoder (`raedit train-decoder`); stage2: the denoiser (`raedit train`)
"""
