"""`python -m ssm_jax`: the `ssm-jax` command line (`ssm_jax.cli`)."""

from ssm_jax.cli import main

raise SystemExit(main())
