"""`python -m ssm_jax` and the `ssm-jax` command: the command line (`ssm_jax.cli`), with Ctrl-C an abort
(`ssm_jax.interrupts`) from before JAX is imported."""

import signal

from ssm_jax import interrupts


def main() -> int:
    """Installs the abort, then runs `ssm_jax.cli.main`; returns its exit code."""
    signal.signal(signal.SIGINT, interrupts.abort)
    from ssm_jax.cli import main as cli_main  # JAX loads here, seconds during which Ctrl-C already aborts cleanly

    try:
        return cli_main()
    finally:
        interrupts.ignore_while_exiting()


if __name__ == "__main__":
    raise SystemExit(main())
