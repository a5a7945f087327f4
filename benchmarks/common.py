"""What every benchmark starts with. Importing it puts the repository (``ROOT``) first on
``sys.path``, so that ``skinfeat`` and ``devtools`` come from this checkout whichever
folder a benchmark is run from; a benchmark imports it before anything of skinfeat's
(``from common import ...``: a script's own folder, benchmarks/, is on ``sys.path``).

``DATA`` is the HAM10000 set in ../shared, ``log`` writes a progress line to stderr and
``argument_parser`` is an ArgumentParser with the options most benchmarks share: --data and --json;
``write_json`` writes the --json table, ``peak_mib`` and ``load_average`` say what a run cost."""

import argparse
import json
import os
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "ham10000"


def log(text):
    print(text, file=sys.stderr, flush=True)


def argument_parser(description, json_help="also write the table here", data_type=None, **kwargs):
    """An ArgumentParser (``kwargs`` go to it) with --data (default DATA, converted by ``data_type``)
    and --json (help ``json_help``; none when it is None)."""
    parser = argparse.ArgumentParser(description=description, **kwargs)
    parser.add_argument("--data", type=data_type, default=str(DATA))
    if json_help is not None:
        parser.add_argument("--json", help=json_help)
    return parser


def peak_mib():
    """This process's peak resident memory, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average():
    """"load average 1.2 0.9 0.7": how busy the machine was, for the printed figures."""
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def write_json(path, value):
    """Write ``value`` as indented JSON to ``path`` when a --json path was given."""
    if path:
        Path(path).write_text(json.dumps(value, indent=1))
