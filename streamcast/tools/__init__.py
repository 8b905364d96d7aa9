"""The command line: ``streamcast serve|config|replay|tail`` and their helpers."""
