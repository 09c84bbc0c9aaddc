"""Runnable experiments: `python -m experiments.<name>`; each names its presets in `ssm_jax.config.CONFIGS` and has
`main(config) -> dict`.

Importing the package prepares the process as every entry point does, before JAX starts its backend: XLA's CPU
flags that make the numbers the same on every x86-64 machine (a flag in your own XLA_FLAGS wins) and XLA's C++ log
kept off the terminal (`ssm_jax.xla_flags.configure_entry_point`)."""

from ssm_jax.xla_flags import configure_entry_point

configure_entry_point()
