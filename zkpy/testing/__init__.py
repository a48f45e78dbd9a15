"""Tools for testing zkpy and programs built on it (like trio.testing, public)."""
