"""Tools for people running zkpy: the interactive shell (`zkpy shell`)."""
