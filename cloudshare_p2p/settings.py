"""Defaults shared by the command line and the service (kept import-light)."""

DEFAULT_LEASE = 8 * 3600  # `open`: nobody renews between open and close
DEFAULT_RUN_LEASE = 120  # `run`: short, renewed at a third while the program runs
