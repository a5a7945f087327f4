"""Runs: a head cross-validated on a features file and recorded. ``cv`` is the one
fold loop, ``fit`` the run of ``skinfeat fit`` (and ``compare --fit``),
``records`` the record store, ``compare`` the leaderboard, ``shiftcheck`` the
fold-0 shift check, ``evaluate`` a saved model scored on outside data,
``combine`` / ``ensemble`` ensembles of recorded runs, ``save`` a recorded run
refitted into a model directory."""
