"""CT: the angle-selection environment, networks, training, evaluation and ONNX export."""
