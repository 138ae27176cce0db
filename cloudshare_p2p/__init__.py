"""Share an accounting data set through an SFTP host with leased, fenced locks."""

__version__ = "0.1.0"
