"""Command-line entry points: kvstore (serve) and kvctl."""
