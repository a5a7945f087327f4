"""The training loop of ``skinfeat finetune``, its checkpoints and its resumption.

A run is keyed by a hash of every setting (module fingerprint, the dataset
manifest, the folds file's bytes, fold, epochs, size, unfreeze, batch, learning
rate, loss, BatchNorm policy, seed) and lives in ``$SKINFEAT_HOME/finetune/<key>/``:

    state.json        epoch (finished), history, best, settings; written atomically
                      after each epoch's checkpoints, it alone says what is done
    epoch-N.*         model and optimizer after epoch N (tf.train.Checkpoint)
    best-N.*          the model of the best epoch so far (by validation BMCA); best-0 is
                      the linear probe the head starts from, on the module as it was

The same command after a kill (SIGKILL included) resumes after the last epoch
state.json records; other settings make another key, so another run (said on
stderr), never a mix. Each epoch's order and augmented views are seeded by
(seed, epoch), so a resumed run trains on what a whole one would. When training
ends (the last epoch, or ``PATIENCE`` epochs without a better validation BMCA),
the best epoch's weights (epoch 0 if no epoch beat the probe) are exported (``skinfeat.finetune.module``) and the
checkpoints removed.

Loss: cross-entropy weighted by inverse class frequency ("balanced"), or focal
loss (gamma 2) with the same weights. Learning rate: linear warm-up over
``WARMUP`` of the steps (at most one epoch), then cosine decay to 0. BatchNorm
"frozen" calls the network with ``training=False`` (moving statistics fixed,
which small batches need; gamma and beta still train); "train" uses batch
statistics. Mixed precision (float16 head, loss scaling) only where TensorFlow
sees a GPU; the module's own graph runs as it was traced (float32). On a CPU with
bfloat16 instructions, ``--precision bfloat16`` runs the training steps under
oneDNN's bfloat16 rewrite (``skinfeat.features.precision``); validation stays float32.
"""

import errno
import fcntl
import json
import math
import os
import time
from contextlib import nullcontext

import numpy as np

from skinfeat.core.atomic import write_atomically
from skinfeat.core.devices import cpu_bfloat16, tf_device
from skinfeat.core.errors import CacheError, UsageError
from skinfeat.core.metrics import classification_metrics
from skinfeat.core.paths import skinfeat_home
from skinfeat.core.progress import bar as progress_bar
from skinfeat.core.tf_runtime import tensorflow
from skinfeat.core.writable import FULL, reason, writing
from skinfeat.features.precision import bfloat16_rewrite
from skinfeat.finetune import data
from skinfeat.finetune.module import build_model, init_head

VERSION = 3  # bump when training computes something else: runs of another version are not resumed
PATIENCE = 3
WARMUP = 0.1
FOCAL_GAMMA = 2.0
PROBE_IMAGES = 1024  # training images of the linear probe the head starts from (and its standardisation)
LOSSES = ("balanced", "focal")
PRECISIONS = ("float32", "bfloat16")
BN_POLICIES = ("frozen", "train")
STATE = "state.json"


def runs_root():
    return skinfeat_home() / "finetune"


def check_settings(s):
    """UsageError for option values that cannot train."""
    problems = [(s["epochs"] < 1, f"--epochs {s['epochs']}: expected at least 1"),
                (min(s["size"]) < 8, f"--size {s['size'][0]} {s['size'][1]}: expected at least 8 8 pixels"),
                (s["batch"] < 1, f"--batch {s['batch']}: expected at least 1"),
                (not (s["lr"] > 0 and math.isfinite(s["lr"])), f"--lr {s['lr']}: expected a positive number"),
                (s["loss"] not in LOSSES, f"--loss {s['loss']!r}: expected one of {', '.join(LOSSES)}"),
                (s["bn"] not in BN_POLICIES, f"--bn {s['bn']!r}: expected one of {', '.join(BN_POLICIES)}"),
                (s["augment"] not in data.AUGMENTS,
                 f"--augment {s['augment']!r}: expected one of {', '.join(data.AUGMENTS)}"),
                (s["unfreeze"] != "all" and not (isinstance(s["unfreeze"], int) and s["unfreeze"] >= 1),
                 f"--unfreeze {s['unfreeze']!r}: expected all or a number of variables (1 or more)")]
    for bad, message in problems:
        if bad:
            raise UsageError(message)


def check_precision(precision, kind):
    """UsageError for a precision the device or this CPU cannot train in usefully."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "bfloat16" and kind == "gpu":
        raise UsageError("--precision bfloat16 is the CPU's mixed precision (oneDNN); on a GPU training runs in "
                         "mixed float16 already: pass --device cpu, or leave --precision out")
    if precision == "bfloat16" and not cpu_bfloat16():
        raise UsageError("--precision bfloat16: this CPU has no bfloat16 instructions (no avx512_bf16 or "
                         "amx_bf16 in /proc/cpuinfo), so oneDNN would emulate them, slower than float32; "
                         "leave --precision out to train in float32")


def read_state(run_dir, key):
    """The run's state, or a fresh one when there is none (or it is of another key)."""
    try:
        state = json.loads((run_dir / STATE).read_text())
        if state.get("key") == key:
            return state
    except (OSError, ValueError):
        pass
    return {"key": key, "epoch": 0, "history": [], "best": None, "stopped": None, "done": False}


def write_state(run_dir, state):
    path = run_dir / STATE
    with writing(path, "the fine-tuning state"):
        write_atomically(path, lambda f: json.dump(state, f, indent=1))


def other_runs(name, key):
    """States of unfinished runs of module ``name`` with other settings."""
    found = []
    for path in sorted(runs_root().glob(f"*/{STATE}")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if state.get("name") == name and state.get("key") != key and not state.get("done"):
            found.append((path.parent, state))
    return found


def differences(a, b):
    """``k a->b`` for the settings that differ (module and data by their names)."""
    skip = {"module_fingerprint", "manifest_sha256", "folds_sha256"}
    return ", ".join(f"{k} {a.get(k)}->{b.get(k)}" for k in b if k not in skip and a.get(k) != b.get(k)) or \
        "the data, module or folds file changed"


class Lock:
    """An exclusive flock on the run directory: one process trains a run at a time."""

    def __init__(self, run_dir):
        self.path = run_dir / "lock"

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise CacheError(f"another `skinfeat finetune` is training this run ({self.path.parent}); "
                             "wait for it to finish, or stop it and run the command again") from None
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def checkpoint_error(run_dir, epoch, exc):
    """The one-line error of a checkpoint that could not be written."""
    text = str(exc)
    full = getattr(exc, "errno", None) in FULL or "No space left" in text or "quota" in text.lower()
    why = reason(OSError(errno.ENOSPC, "")) if full else (reason(exc) if isinstance(exc, OSError) else
                                                         text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
    done = f"resumes after epoch {epoch - 1}" if epoch > 1 else "starts again"
    what = f"epoch {epoch}" if epoch else "the linear probe (epoch 0)"
    return CacheError(f"cannot write the checkpoint of {what} to {run_dir}: {why}; free space there "
                      f"(the same command then {done}) or set SKINFEAT_HOME to a disk with room")


def remove_checkpoints(run_dir, keep=()):
    for path in list(run_dir.glob("epoch-*")) + list(run_dir.glob("best-*")) + list(run_dir.glob("*_temp")):
        if path.name.split(".")[0] not in keep:
            if path.is_dir():
                import shutil

                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def save(checkpoint, run_dir, prefix, epoch, state):
    """Write ``checkpoint`` as ``run_dir/prefix``; on failure, remove what this epoch
    wrote and raise ``checkpoint_error``."""
    tf = tensorflow()

    try:
        checkpoint.write(str(run_dir / prefix))
    except (OSError, tf.errors.OpError) as exc:
        remove_checkpoints(run_dir, keep={f"epoch-{state['epoch']}", f"best-{(state['best'] or {}).get('epoch')}"})
        raise checkpoint_error(run_dir, epoch, exc) from None


def make_loss(kind, weights):
    tf = tensorflow()
    w = tf.constant(weights, tf.float32)

    def loss(labels, logits):
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        weight = tf.gather(w, labels)
        scale = weight * (1.0 - tf.exp(-ce)) ** FOCAL_GAMMA if kind == "focal" else weight
        return tf.reduce_sum(scale * ce) / tf.reduce_sum(weight)
    return loss


def schedule(peak, steps_per_epoch, epochs):
    """Linear warm-up, then cosine decay to 0, by optimizer step."""
    tf = tensorflow()
    import tf_keras

    total = steps_per_epoch * epochs
    warmup = max(1, min(steps_per_epoch, round(WARMUP * total)))

    class WarmupCosine(tf_keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            progress = tf.clip_by_value((step - warmup) / max(1, total - warmup), 0.0, 1.0)
            cosine = 0.5 * peak * (1.0 + tf.cos(math.pi * progress))
            return tf.where(step < warmup, peak * (step + 1) / warmup, cosine)

        def get_config(self):
            return {"peak": peak, "warmup": warmup, "total": total}

    return WarmupCosine()


def evaluate(model, batches):
    """(BMCA, accuracy, n) of the model's argmax decisions on clean ``batches``."""
    tf = tensorflow()

    labels, probas = [], []
    for images, y in batches:
        probas.append(tf.nn.softmax(tf.cast(model(images, training=False), tf.float32)).numpy())
        labels.append(y.numpy())
    y, proba = np.concatenate(labels), np.concatenate(probas)
    m = classification_metrics(y, proba)
    return m["bmca"], m["accuracy"], len(y)


def train(run, log, progress, device="cpu"):
    """Train ``run`` (a ``skinfeat.finetune.Run``) from its state to the end on ``device``
    (``cpu`` or ``gpu``, mixed float16 precision there); returns (model, standardisation
    layer, head, state) with the best epoch's weights in the model."""

    with tensorflow().device(tf_device(device)):
        return _train(run, log, progress, device == "gpu")


def _train(run, log, progress, gpu):
    tf = tensorflow()
    import tf_keras

    s, split, run_dir, state = run.settings, run.split, run.run_dir, run.state
    size = tuple(s["size"])
    model, standardize, head, variables = build_model(run.obj, size, s["unfreeze"], s["seed"], mixed_precision=gpu)
    val = data.clean_batches(run.manifest, split.val, size)
    if not state["epoch"]:  # from the module as it is (later epochs restore it with the model)
        init_head(model, standardize, head, data.clean_batches(run.manifest, data.sample(
            np.asarray(run.manifest.labels), split.train, PROBE_IMAGES, s["seed"]), size), s["seed"])
        bmca, accuracy, n_val = evaluate(model, val)  # epoch 0, the linear probe: kept if no epoch beats it
        save(tf.train.Checkpoint(model=model), run_dir, "best-0", 0, state)
        state["best"] = state["probe"] = {"epoch": 0, "val_bmca": bmca, "val_accuracy": accuracy}
        write_state(run_dir, state)
        log(f"epoch 0 (linear probe on the module's features): validation BMCA {bmca:.3f} / accuracy "
            f"{accuracy:.3f} ({n_val} images)")
    steps = math.ceil(len(split.train) / s["batch"])
    lr = schedule(s["lr"], steps, s["epochs"])
    optimizer = tf_keras.optimizers.Adam(lr)
    if gpu:
        optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
    optimizer.build(variables)
    last = tf.train.Checkpoint(model=model, optimizer=optimizer)
    best = tf.train.Checkpoint(model=model)
    if state["epoch"] and not state["done"]:
        last.read(str(run_dir / f"epoch-{state['epoch']}")).expect_partial()
    loss_fn = make_loss(s["loss"], data.class_weights(np.asarray(run.manifest.labels)[split.train]))
    bn_train = s["bn"] == "train"
    spec = [tf.TensorSpec([None, size[0], size[1], 3], tf.float32), tf.TensorSpec([None], tf.int32)]

    @tf.function(input_signature=spec)
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, tf.cast(model(images, training=bn_train), tf.float32))
            scaled = optimizer.get_scaled_loss(loss) if gpu else loss
        grads = tape.gradient(scaled, variables)
        if gpu:
            grads = optimizer.get_unscaled_gradients(grads)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    n = len(split.train)
    bar = progress_bar(None, progress, total=n * s["epochs"], initial=n * state["epoch"], unit="img")
    while not state["done"]:
        epoch = state["epoch"] + 1
        bar.set_description(f"finetune epoch {epoch}/{s['epochs']}")
        start, losses, seen = time.perf_counter(), [], 0
        for images, labels in data.train_batches(run.manifest, split.train, size, s["batch"], s["seed"], epoch,
                                                s["augment"]):
            with bfloat16_rewrite() if run.precision == "bfloat16" else nullcontext():
                losses.append(float(step(images, labels)) * int(labels.shape[0]))
            seen += int(labels.shape[0])
            bar.update(int(labels.shape[0]))
            bar.set_postfix(loss=f"{losses[-1] / int(labels.shape[0]):.3f}")
        train_seconds = time.perf_counter() - start
        bmca, accuracy, n_val = evaluate(model, val)
        entry = {"epoch": epoch, "loss": sum(losses) / max(seen, 1), "val_bmca": bmca, "val_accuracy": accuracy,
                 "lr": float(lr(optimizer.iterations)),
                 "seconds": time.perf_counter() - start, "images": seen, "images_per_second": seen / train_seconds,
                 "unreadable": n - seen, "n_val": n_val}
        improved = bmca > state["best"]["val_bmca"]
        if improved:
            save(best, run_dir, f"best-{epoch}", epoch, state)
        save(last, run_dir, f"epoch-{epoch}", epoch, state)
        state["history"].append(entry)
        state["epoch"] = epoch
        if improved:
            state["best"] = {"epoch": epoch, "val_bmca": bmca, "val_accuracy": accuracy}
        stale = epoch - state["best"]["epoch"] >= PATIENCE
        if stale and epoch < s["epochs"]:
            state["stopped"] = f"early stop: no better validation BMCA for {PATIENCE} epochs"
        state["done"] = epoch >= s["epochs"] or bool(state["stopped"])
        write_state(run_dir, state)
        remove_checkpoints(run_dir, keep={f"epoch-{epoch}", f"best-{state['best']['epoch']}"})
        bar.clear()  # the line above the bar
        log(f"epoch {epoch}/{s['epochs']}: loss {entry['loss']:.4f}, validation BMCA {bmca:.3f} / accuracy "
            f"{accuracy:.3f} ({n_val} images), {entry['seconds']:.0f} s, {entry['images_per_second']:.1f} img/s"
            + (f", {n - seen} unreadable images left out" if n > seen else "") + ("  (best so far)" if improved else ""))
        if state["stopped"]:
            log(state["stopped"])
        bar.refresh()
    bar.close()
    best.read(str(run_dir / f"best-{state['best']['epoch']}")).expect_partial()
    return model, standardize, head, state
