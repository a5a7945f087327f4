"""The fits of a benchmark kept as real run records, so a killed benchmark resumes:
``FitSteps(name)`` keeps ``$SKINFEAT_HOME/<name>/steps.json`` (step -> record path) and
its runs in ``$SKINFEAT_RUNS`` (default ``<name>/runs`` there). Used by bench_lesion,
bench_precision and bench_fusion (its home and runs)."""

import json
import os
from pathlib import Path


class FitSteps:
    def __init__(self, name):
        from skinfeat.core.paths import skinfeat_home

        self.home = skinfeat_home() / name
        self.runs = Path(os.environ.get("SKINFEAT_RUNS") or self.home / "runs")
        self.home.mkdir(parents=True, exist_ok=True)
        self._path = self.home / "steps.json"
        self._steps = json.loads(self._path.read_text()) if self._path.is_file() else {}

    def fit(self, step, features, manifest, shifts, log, label):
        """The record of the logreg fit (5-fold CV, and the shift check on ``manifest``
        under ``shifts`` unless empty) of the ``features`` file: read back when
        ``step`` was done before, else fitted now and remembered."""
        done = self._steps.get(step)
        if done and Path(done).is_file():
            return dict(json.loads(Path(done).read_text()), record_path=done)
        from skinfeat.runs.fit import run_fit

        log(f"[{label}] fitting logreg, 5-fold CV{' and the shift check' if shifts else ''}")
        record = run_fit(str(features), "logreg", runs=self.runs, shift_data=manifest if shifts else None,
                         shifts=shifts, progress=True, log=log)
        self._steps[step] = record["record_path"]
        self._path.write_text(json.dumps(self._steps, indent=1))
        return record
