"""Exports of trained medseg models for runtimes without medseg's PyTorch stack (ONNX)."""
