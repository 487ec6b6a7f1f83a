"""Evaluation: feature extractors, metrics and reference statistics (recipe.md, "Evaluation protocol").

- `inception`: the TF FID Inception-v3 (pool, spatial and optional logits features); `features`: runs extractors.
- `frechet`: Fréchet distance (FID, sFID, FD on encoder features); `precision_recall`: k-NN manifolds.
- `similarity`: PSNR, SSIM, perceptual distance of an image to its reference; `autoencoder_metrics`: rFID and
  those means over a validation set.
- `image_sets`: npz / image folder / generator inputs; `reference`: cached reference statistics.
- `evaluate`: generation metrics of a sample set; `probe`: linear probe on frozen encoder tokens.
"""
