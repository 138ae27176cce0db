"""Defaults shared by the command line and the service (kept import-light)."""

from enum import Enum

DEFAULT_LEASE = 8 * 3600  # `open`: nobody renews between open and close
DEFAULT_RUN_LEASE = 120  # `run`: short, renewed at a third while the program runs


class Until(Enum):
    """A `--wait` without a duration."""

    LEASE_ENDS = "lease-ends"  # wait until the holder's lease runs out
