"""The backbone of a model directory as TFLite (``backbone.tflite``), run with the
light ``ai-edge-litert`` interpreter: no TensorFlow import."""

import os

import numpy as np

from skinfeat.core.tf_runtime import stderr_without


class TFLiteBackbone:
    """A TFLite image feature-vector model: float32 [B, H, W, 3] in [0, 1] -> [B, D]."""

    def __init__(self, path, threads=None):
        from ai_edge_litert.interpreter import Interpreter

        # Drops the C++ runtime's "INFO: Created TensorFlow Lite XNNPACK delegate" line.
        with stderr_without(lambda line: True):
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())
            self.interpreter.allocate_tensors()
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0]["shape"]) != 4 or inputs[0]["shape"][3] != 3 \
                or len(outputs[0]["shape"]) != 2:
            raise ValueError(f"it maps {[list(i['shape']) for i in inputs]} to {[list(o['shape']) for o in outputs]}, "
                             "expected one image batch [B, H, W, 3] to one feature batch [B, D]")
        self._input, self._output = inputs[0], outputs[0]
        self.input_size = tuple(int(s) for s in self._input["shape"][1:3])
        self.feature_dim = int(self._output["shape"][-1])
        self._batch = int(self._input["shape"][0])

    def __call__(self, images):
        images = np.ascontiguousarray(images, np.float32)
        if images.shape[1:] != (*self.input_size, 3):
            raise ValueError(f"images of shape {images.shape[1:]}, expected {(*self.input_size, 3)}")
        if len(images) != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], [len(images), *self.input_size, 3])
            self.interpreter.allocate_tensors()
            self._batch = len(images)
        self.interpreter.set_tensor(self._input["index"], images)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"]).copy()
