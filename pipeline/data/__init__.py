"""Data: sources to uint8 arrays, splits, GPU-resident batches and augmentation."""
