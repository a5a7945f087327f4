"""``skinfeat finetune``: train a backbone end to end on a dataset's training folds,
on augmented views framed as it will see images, and make the result one more backbone.

    from skinfeat.finetune import finetune
    result = finetune(manifest, "efficientnet-lite0", "folds.csv", fold=0, dataset_name="ham10000")
    result.name   # "finetuned/efficientnet-lite0-ham10000-fold0": --module for every command

``skinfeat.finetune.data`` chooses and reads the images, ``.train`` runs the
resumable loop, ``.module`` builds the network and exports what it learnt: a
TF-Hub image feature-vector SavedModel in the module cache (with the ids of
every image it saw, for ``fit``'s leak guard) and its own head as a model
directory. The run's history goes into a run record (schema
``skinfeat-finetune``) and a plot in runs/.
"""

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from skinfeat import __version__
from skinfeat.backbones import cache
from skinfeat.backbones.resolve import ARCHIVE_SUFFIXES, resolve_module
from skinfeat.core.classes import CLASSES
from skinfeat.core.devices import resolve
from skinfeat.core.errors import UsageError
from skinfeat.core.writable import check_writable, writing
from skinfeat.data.manifest import content_hashes
from skinfeat.features.extract import feature_key, manifest_digest, slug
from skinfeat.features.store import CONTENT_HEX
from skinfeat.finetune import train as training
from skinfeat.finetune.data import split_rows
from skinfeat.finetune.module import load_trainable, publish, save_head
from skinfeat.runs.records import FINETUNE_SCHEMA, check_runs_writable, new_run_id, write_record
from skinfeat.viz.plots import plot_history, save_figure

# For a 2-core CPU: HAM10000's native 150x200 (0.6x the cost of 224x224; EfficientNet
# is fully convolutional), batch 16 with frozen BatchNorm statistics. Peak learning rate
# 1e-4: at 3e-4 the first epoch of the full fold run fell below the linear probe
# (validation BMCA 0.423 against 0.524), at 1e-4 it rose above it (0.584; README).
DEFAULTS = {"epochs": 8, "size": (150, 200), "unfreeze": "all", "batch": 16, "lr": 1e-4, "loss": "balanced",
            "bn": "frozen", "augment": "frames", "seed": 0}


@dataclass
class Run:
    settings: dict
    split: object
    manifest: object
    run_dir: Path
    state: dict
    obj: object = None
    precision: str = "float32"


@dataclass
class FinetuneResult:
    name: str
    module_dir: str
    model_dir: str
    record_path: str
    plot: str
    state: dict
    reused: bool = False


def module_name(mod, dataset, fold):
    """``finetuned/<base>-<dataset>-fold<K>`` (or ``-all``); a local base by its folder's name."""

    base = mod.name
    if mod.kind in ("directory", "archive"):
        base = next((base[:-len(s)] for s in ARCHIVE_SUFFIXES if base.endswith(s)), base).rstrip("/")
        base = Path(base).name
    return f"finetuned/{slug(base)}-{slug(dataset)}-{'all' if fold is None else f'fold{fold}'}"


def finetune(manifest, module=None, folds=None, fold=None, *, dataset_name="dataset", out=None, runs=None,
             progress=True, log=None, device="auto", precision="float32", **options):
    """Fine-tune ``module`` on ``manifest``'s training folds of the folds file ``folds``
    (every fold but ``fold``; ``fold=None``: all, for the epochs a fold run of the same
    settings chose: ``final_epochs``); ``options`` override DEFAULTS.
    ``device`` (``skinfeat.core.devices``): auto, cpu or gpu; not part of the run's key.
    ``precision``: float32, or bfloat16 on a CPU with bfloat16 instructions (keyed apart;
    float32 runs keep the keys they had).
    Returns a FinetuneResult; rerunning the same call resumes or reuses the run."""

    log = log or (lambda line: None)
    # --device gpu without one, or bfloat16 where it cannot run, fails before anything is read;
    # otherwise the device is looked for (TensorFlow imported) only when there is training to do
    kind = resolve(device) if device == "gpu" or precision != "float32" else None
    if kind is not None:
        training.check_precision(precision, kind)
    settings = dict(DEFAULTS, **{k: v for k, v in options.items() if v is not None})
    settings["size"] = [int(v) for v in settings["size"]]
    unfreeze = str(settings["unfreeze"])
    settings["unfreeze"] = int(unfreeze) if unfreeze.isdigit() else unfreeze
    training.check_settings(settings)
    if folds is None:
        raise UsageError("--folds FILE is required: the folds file (`skinfeat data split`) whose training "
                         "folds the network learns from, so that `fit` can score the others")
    split = split_rows(manifest, folds, fold, settings["seed"])
    mod = resolve_module(module, check=False)  # named and fingerprinted: a run that is up to date needs no more
    key_parts = {"module": mod.name, "module_fingerprint": mod.fingerprint, "data": dataset_name,
                 "manifest_sha256": manifest_digest(manifest), "folds_sha256": split.folds_sha256,
                 "fold": "all" if fold is None else int(fold), **settings, "version": training.VERSION}
    if precision != "float32":
        key_parts["precision"] = precision
    if fold is None:
        key_parts["epochs"] = settings["epochs"] = final_epochs(key_parts, options.get("epochs"))
    key = feature_key(key_parts)[:16]
    name = module_name(mod, dataset_name, fold)
    run_dir = training.runs_root() / key
    model_dir = Path(out) if out is not None else run_dir / "model"
    done = _reusable(run_dir, key, name, model_dir)
    if done:
        return done
    if mod.kind in ("handle", "directory", "archive"):  # not built by skinfeat: checked as resolve_module does
        mod.check()
    obj = load_trainable(mod, settings["unfreeze"])  # an unusable module fails before anything is written
    kind = kind or resolve(device)
    check_writable(run_dir, "fine-tuning checkpoints", folder=True)
    check_runs_writable(runs)
    if out is not None:
        check_writable(out, "the model", folder=True)
    with writing(run_dir, "fine-tuning checkpoints"):
        run_dir.mkdir(parents=True, exist_ok=True)
    with training.Lock(run_dir):
        done = _reusable(run_dir, key, name, model_dir)  # another process may have finished it meanwhile
        if done:
            return done
        state = training.read_state(run_dir, key)
        _announce(log, name, key, key_parts, state, run_dir, len(split.train), len(split.val))
        state.update(name=name, settings=key_parts)
        training.write_state(run_dir, state)  # an interrupted run is known to later runs of other settings
        run = Run(settings, split, manifest, run_dir, state, obj, precision)
        _, standardize, head, state = training.train(run, log, progress, kind)
        return _finish(run, mod, name, key, key_parts, (standardize, head), model_dir, runs, log)


# The settings a fold run and the final (--all) run share: the final run trains on every
# fold for the number of epochs the fold runs chose.
SAME_RECIPE = ("module_fingerprint", "data", "manifest_sha256", "folds_sha256", "size", "unfreeze", "batch", "lr",
               "loss", "bn", "augment", "seed", "version", "precision")


def chosen_epochs(key_parts):
    """{fold: best epoch} of the finished fold runs of this recipe (``SAME_RECIPE``)."""
    import json

    found = {}
    for path in sorted(training.runs_root().glob(f"*/{training.STATE}")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        s = state.get("settings") or {}
        if state.get("done") and state.get("best") and s.get("fold") not in (None, "all") and \
                all(s.get(k) == key_parts.get(k) for k in SAME_RECIPE):
            found[int(s["fold"])] = int(state["best"]["epoch"])
    return found


def final_epochs(key_parts, asked):
    """The epochs of the final network (``--all``): those the fold runs of this recipe
    chose (their median best epoch); ``asked`` must be one of them. UsageError otherwise."""
    chosen = chosen_epochs(key_parts)
    if not chosen:
        raise UsageError("--all trains the final network for the epochs a fold run of the same settings chose, "
                         "and none has finished: run `skinfeat finetune --fold K` with these settings first")
    said = ", ".join(f"{e} (fold {f})" for f, e in sorted(chosen.items()))
    if asked is not None and int(asked) not in chosen.values():
        raise UsageError(f"--epochs {asked}: the fold runs of these settings chose {said}; pass one of them "
                         "with --all, or leave --epochs out for their median")
    epochs = int(asked) if asked is not None else int(np.ceil(np.median(list(chosen.values()))))
    if epochs < 1:
        raise UsageError(f"the fold runs of these settings chose {said}: fine-tuning did not beat the linear "
                         "probe on the frozen backbone, so there is no final network to train; use the "
                         "frozen backbone with `skinfeat extract` and `fit`")
    return epochs


def _reusable(run_dir, key, name, model_dir):
    """The FinetuneResult of run ``key`` when it is finished and exported as ``name``
    with its model in ``model_dir`` (read only, no TensorFlow), else None."""
    state = training.read_state(run_dir, key)
    if state.get("exported") and _current(name, key) and (model_dir / "model.json").is_file():
        e = state["exported"]
        return FinetuneResult(name, e["module_dir"], str(model_dir), e["record"], e["plot"], state, True)
    return None


def _current(name, key):
    """Whether the module cache holds ``name`` as exported by run ``key``."""

    return (cache.read_descriptor(cache.modules_dir() / name) or {}).get("run_key") == key


def _announce(log, name, key, key_parts, state, run_dir, n_train, n_val):
    if state["epoch"]:
        log(f"resuming {name} (run {key}, {run_dir}) after epoch {state['epoch']} of {key_parts['epochs']}")
    else:
        log(f"fine-tuning {key_parts['module']} into {name}: {n_train} training images, {n_val} for "
            f"validation; run {key} in {run_dir}")
    for other_dir, other in training.other_runs(name, key):
        log(f"note: an unfinished run of {name} with other settings is in {other_dir} "
            f"({training.differences(other.get('settings') or {}, key_parts)}); this is another run "
            "and leaves it as it is (its own command resumes it)")


def _finish(run, mod, name, key, key_parts, layers, model_dir, runs, log):
    """Export the module and the head, write the record and the plot, clean up."""

    start = time.perf_counter()
    state, split, manifest = run.state, run.split, run.manifest
    seen = split.seen_ids(manifest)
    base = mod.describe()
    fold = key_parts["fold"]
    where = "every fold" if fold == "all" else f"every fold but {fold}"
    best = state["best"]
    old = cache.read_descriptor(cache.modules_dir() / name)
    if old and old.get("run_key") != key:
        log(f"note: {name} from run {old.get('run_key')} (other settings) is replaced by this run's")
    descriptor = {
        "base": mod.name, "base_fingerprint": mod.fingerprint, "data": key_parts["data"],
        "manifest_sha256": key_parts["manifest_sha256"], "fold": fold, "folds_sha256": split.folds_sha256,
        "epochs": key_parts["epochs"], "epochs_trained": state["epoch"], "best_epoch": best["epoch"],
        "val_bmca": best["val_bmca"], "input_size": key_parts["size"], "feature_dim": mod.feature_dim,
        "settings": key_parts,
        "source": f"fine-tuned by skinfeat from {mod.name} on {key_parts['data']} ({where} of its folds file), "
                  f"epoch {best['epoch']} of {state['epoch']}",
        "preprocessing": base.get("preprocessing"), "pretraining": f"{base.get('pretraining')}, then "
                                                                   f"{key_parts['data']} ({where})",
        "license": base.get("license"), "n_trained_on": len(seen),
        "trained_on_sha256": _sha256("\n".join(seen)), "trained_on": seen}
    module_dir = publish(run.obj, name, descriptor, key)
    new = resolve_module(name)
    counts = np.bincount(np.asarray(manifest.labels)[split.train].astype(int), minlength=len(CLASSES))
    run_id = new_run_id("finetune", key)
    training_info = {"n_images": len(split.train), "use_views": False, "class_counts": counts.tolist(),
                     "run_id": run_id, "finetune": {"fold": fold, "best_epoch": best["epoch"],
                                                    "val_bmca": best["val_bmca"]}}
    saw = manifest.subset(np.concatenate([split.train, split.val]))  # what the leak guard calls seen
    save_head(model_dir, *layers, new, training_info,
              seen=(saw.image_ids, [h[:CONTENT_HEX] for h in content_hashes(saw)]))
    history = state["history"]
    record = {
        "run_id": run_id, "created": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "skinfeat_version": __version__, "module": name, "module_fingerprint": new.fingerprint,
        "module_dir": str(module_dir), "base": mod.name, "data": key_parts["data"], "fold": fold,
        "key": key, "settings": key_parts, "n_train": len(split.train), "n_val": len(split.val),
        "n_unseen": len(split.unseen), "class_counts": counts.tolist(), "probe": state.get("probe"), "history": history, "best": best,
        "stopped": state["stopped"], "model_dir": str(model_dir),
        "timings": {"train_seconds": sum(h["seconds"] for h in history),
                    "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])),
                    "images_per_second": float(np.mean([h["images_per_second"] for h in history])),
                    "export_seconds": time.perf_counter() - start}}
    record_path = write_record(record, runs, schema=FINETUNE_SCHEMA)
    plot = record_path.with_name(f"{run_id}.history.png")
    with writing(plot, "the history plot"):
        save_figure(plot_history(history, best["epoch"], title=name), plot)
    state["exported"] = {"module_dir": str(module_dir), "record": str(record_path), "plot": str(plot)}
    training.write_state(run.run_dir, state)
    training.remove_checkpoints(run.run_dir, keep={f"best-{best['epoch']}"})  # enough to export again
    log(f"{name}: best epoch {best['epoch']} (validation BMCA {best['val_bmca']:.3f}); module {module_dir}; "
        f"model {model_dir}; record {record_path}")
    return FinetuneResult(name, str(module_dir), str(model_dir), str(record_path), str(plot), state)


def _sha256(text):
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()
