"""Evaluation: feature extractors, metrics and reference statistics (recipe.md, "Evaluation protocol").

- `inception`: the TF FID Inception-v3 (pool, spatial and optional logits features).
- `frechet`: Fréchet distance (FID, sFID, FD on encoder features); `precision_recall`: k-NN manifolds.
- `recon_metrics`: PSNR, SSIM, perceptual distance; `reconstruction`: rFID and the rest for an autoencoder.
- `samples`: npz / image folder / generator inputs; `reference`: cached reference statistics.
- `evaluate`: generation metrics of a sample set; `probe`: linear probe on frozen encoder tokens.
- `recon_job`: the `raedit eval-recon` config and job.
"""
