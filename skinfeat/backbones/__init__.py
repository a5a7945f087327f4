"""Backbones: what ``--module`` names, resolved into TF-Hub image feature-vector modules::

    from skinfeat.backbones.resolve import resolve_module, DEFAULT_MODULE
    mod = resolve_module("efficientnet-lite0")   # or a handle, a SavedModel dir, a .tar.gz
    fn = mod.load()                              # [B, H, W, 3] float32 in [0, 1] -> [B, D]

The catalog is ``skinfeat/configs/backbones.toml``; built-in backbones are converted
offline from weights that ship in registry packages, once, into the module
cache (``$SKINFEAT_HOME/modules``). ``tflite`` runs a backbone exported to TFLite.
"""
