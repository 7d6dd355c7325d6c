"""r1probe: representation engineering for refusal in reasoning LLMs."""

__version__ = "0.1.0"

from r1probe.errors import R1ProbeError  # noqa: E402

__all__ = ["R1ProbeError", "__version__"]
