"""The chapter runner and book builder: ``python -m ntklib.book --help``."""
