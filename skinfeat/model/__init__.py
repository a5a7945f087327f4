"""The fitted-model directory: its format, saving and loading, the TFLite
backbone runner, export and the predictor. Safe formats only: loading parses
JSON, numpy arrays (``allow_pickle=False``) and, for LightGBM, its text model;
it never unpickles or runs code. A model directory may come from anywhere:
every field is checked before use (damage is one ModelError naming the
directory), no symlink may lead out of it, and the backbone SavedModel it
records is loaded (``export``, ``explain --method gradient``) only when the
catalog has it or the user names it with ``--module``: prediction runs the
directory's own ``backbone.tflite``. A model directory is written whole in a
temporary directory that then takes its place (``format.new_model_dir``): it is
complete or it is not there.

Layout of a model directory (``skinfeat.model.format``)::

    model.json    format "skinfeat-model", format_version, head (registry name),
                  params (every head parameter), classes (output columns, CLASSES names),
                  backbone (module, module_source, module_fingerprint, module_info (with
                  the preprocessing and value range), input_size, resize, feature_dim,
                  views, dtype), features (key, path), training (images, views used,
                  folds, CV metrics), skinfeat_version, created, files, numpy_head (how
                  the predictor evaluates the head without scikit-learn), export
                  (backbone.tflite)
    state.npz     the head's fitted arrays (scaler, PCA, weights, class offsets, classes_)
    lightgbm.txt  LightGBM's text model (lightgbm head only)
    backbone.tflite  the backbone as TFLite, when it could be exported (``skinfeat.model.export``;
                  model.json ``export`` says how, or why it was skipped): prediction
                  from images then needs nothing outside the directory

A model fitted on several backbones' features (``fit --features A --features B``,
``skinfeat.features.join``) has, in model.json, ``parts``: one {backbone, export} block per
backbone in the order their features are joined, and their TFLite files
``backbone-0.tflite``, ``backbone-1.tflite``...; its own ``backbone`` block names them
all ("A + B") with the joined feature_dim. A model fitted with ``--metadata`` has
``metadata``: the encoding (columns, age mean and std, the categories of sex and
site; ``skinfeat.data.metadata``) whose columns follow the image features.

The backbone block holds what prediction from images needs to reproduce the
features: which module, its fingerprint, input size and resize method.

An ensemble directory (``skinfeat ensemble --out``: model.json of format
"skinfeat-ensemble", the meta-learner's state.npz, a model directory per member
under ``members/``) is described and loaded by ``ensemble`` (``EnsemblePredictor``;
``load_any`` takes either kind); ``read_manifest`` of one says it is an ensemble.

Modules: ``format`` (names, version, manifest, hashes, the fingerprint check),
``store`` (``save_model``, ``load_model``: the scikit-learn head), ``tflite``
(``TFLiteBackbone``), ``export`` (the backbone into the directory, in a fresh
process), ``predictor`` (``Predictor``: TFLite backbone plus the numpy head).
Nothing here imports ``skinfeat.runs.fit`` or ``skinfeat.model.predict``.
"""
