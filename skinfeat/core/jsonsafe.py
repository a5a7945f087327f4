"""JSON helpers: values made JSON-safe (numpy scalars and arrays, NaN as null).
"""

import math


def json_safe(value):
    """JSON-safe copy: NaN/inf become None, numpy scalars plain numbers, tuples lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

