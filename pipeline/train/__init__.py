"""Training: one loop for pretraining and refinement, schedules, checkpoints, device and optimizer set-up."""
