"""One image at a time: decoding and the readable-image rule (``images``), the
lesion crop (``lesion``), augmentation (``augment``), test-time views (``tta``)
and the standard distribution shifts (``shifts``)."""
