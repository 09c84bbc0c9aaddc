"""Runnable experiments: `python -m experiments.<name>`; each names its presets in `ssm_jax.configs.CONFIGS` and has
`main(config) -> dict`."""
