"""Import tensorflow_hub without its pkg_resources deprecation warning on every command."""

import warnings


def import_hub():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import tensorflow_hub

    return tensorflow_hub
