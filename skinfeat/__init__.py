"""skinfeat: which pretrained backbone and light head classify skin lesions best.

The library owns the logic and the defaults; ``skinfeat.cli`` only parses.
"""

__version__ = "0.1.0"
