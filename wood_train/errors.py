"""Errors meant for the person running hardood.

``hardood`` prints a ``HardoodError`` as one line (``hardood train: error: ...``) and lets every
other exception show its traceback, because anything else is a bug. A message names the file,
row or flag, says what is wrong and what to do. The subclasses also derive from the built-in
exception a Python caller would expect, so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class HardoodError(Exception):
    """A problem with what the user gave hardood (a flag, a file, a dataset, a store)."""


class ConfigError(HardoodError, ValueError):
    """A value the user gave (a flag, a config field, a name) that cannot work."""


class DataError(HardoodError, ValueError):
    """A file, dataset, manifest or store whose content is not what hardood needs."""


class MissingInputError(HardoodError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class OutputExistsError(HardoodError, FileExistsError):
    """An output that is already there and would be replaced (use --force, or another path)."""


class DivergedError(HardoodError, FloatingPointError):
    """Training met a NaN or inf (a loss term, the gradient or the weights) and stopped."""
