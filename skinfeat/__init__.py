"""skinfeat: which pretrained backbone and light head classify skin lesions best.

The library owns the logic and the defaults; ``skinfeat.cli`` only parses.
"""

__version__ = "0.1.0"

import os as _os

# TensorFlow's C++ info and warning logs are noise for users of a command-line
# tool; real errors still raise. Users can override it. (TF 2.21 still prints
# start-up lines before its logging reads this; skinfeat.core.tf_runtime drops them.)
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
