"""Offline training: data, preparation, model, evaluation and ONNX export."""
