"""MIM refinement pipeline: MAE/MFF pretraining, per-block probing, NNA refinement and evaluation."""
