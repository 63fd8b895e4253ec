"""Evaluation: tensors in, numbers out. Feature extraction is separate from the classifiers."""
