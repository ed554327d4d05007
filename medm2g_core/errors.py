"""The exceptions medm2g raises. The CLI maps each to a one-line message and an exit code.

Exit codes follow the CLI contract: 0 success, 1 runtime failure, 2 bad input or usage.

The engine's messages name the problem in its own words, never a command-line flag: the engine is also called
from Python, where nobody typed ``--steps``. When one parameter is at fault (or is the remedy, as ``overwrite``), its
name as the engine spells it is in ``option`` (``InputError("denoising steps must be within 1-1000; got 0",
option="steps")``), and the CLI adds the flag of that parameter to the message.
"""


class Medm2gError(Exception):
    """Base of every error medm2g raises on purpose; ``option`` names the parameter at fault, if one is."""

    exit_code = 1

    def __init__(self, *args: object, option: str | None = None) -> None:
        super().__init__(*args)
        self.option = option


class InputError(Medm2gError):
    """The user handed us something we cannot use: a bad file, a bad option, a missing path."""

    exit_code = 2


class OutputExistsError(InputError):
    """An output already exists and ``overwrite`` was not asked for."""


class OutputError(InputError):
    """An output cannot be written: a read-only or full file system, a folder without permission."""


class DeviceError(InputError):
    """An explicitly requested device is not available (never silently replaced)."""


class ModelError(Medm2gError):
    """A model folder or download is missing, incomplete or fails verification."""


class MissingDependencyError(Medm2gError):
    """An optional piece (codec, Java, external tool) is needed but not installed."""

    def __init__(self, what: str, install: str, *, option: str | None = None) -> None:
        super().__init__(f"{what} is not installed; install it with: {install}", option=option)
        self.what = what
        self.install = install
