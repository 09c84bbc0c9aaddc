"""Runnable experiments: `python -m experiments.<name>`; each has a frozen `Args` dataclass and `main(args) -> dict`."""
