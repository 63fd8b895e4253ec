"""Models: the ViT encoder (timm blocks, per-block outputs), the MAE decoder and MFF fusion."""
