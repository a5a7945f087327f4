"""Exception types for expected, user-facing errors.

Library code raises these with a message that says what was got, what was
expected and what to do. The CLI prints the message on one line, without a
traceback (exit 1; ``UsageError`` exits 2 like a bad option).
"""


class SkinfeatError(Exception):
    """Base class of every expected error."""


class UsageError(SkinfeatError):
    """A bad argument combination or value given on the command line."""


class DataError(SkinfeatError):
    """A dataset, manifest or split file that cannot be used."""


class ModuleError(SkinfeatError):
    """A backbone that cannot be found, built or loaded."""


class CacheError(SkinfeatError):
    """A cache (module or features) that cannot be written or is busy."""


class FeaturesError(SkinfeatError):
    """A features file that is foreign, incomplete or inconsistent."""


class ModelError(SkinfeatError):
    """A fitted-model directory that is incomplete or no longer matches."""
