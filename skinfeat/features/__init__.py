"""Feature files: the HDF5 store (``store``), extraction over a dataset, once and
resumable (``extract``, with its cache ``keys``, the tf.data input ``pipeline``,
the Ray engine ``ray_engine`` and reduced ``precision``), and joining several
files and patient metadata into one set (``join``)."""
