"""Objectives: pure loss functions on tensors (no state, no device, no dist calls)."""
