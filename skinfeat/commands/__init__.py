"""Click commands, one module per concern. Each module keeps heavy imports
(TensorFlow, LightGBM) inside the command functions so ``--help`` is instant."""
