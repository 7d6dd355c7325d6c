"""User-facing errors: one clear line, no traceback (the CLI prints ``str(err)``)."""


class R1ProbeError(Exception):
    """An error caused by the user's input or environment, explained in one line."""


class SpecError(R1ProbeError):
    """A model spec that cannot be resolved (unknown builtin, missing path...)."""


class IntegrityError(R1ProbeError):
    """A file whose checksum does not match what was expected."""


class UnsupportedModelError(R1ProbeError):
    """An architecture whose module layout r1probe does not know."""


class DataError(R1ProbeError):
    """A malformed or empty data file."""
