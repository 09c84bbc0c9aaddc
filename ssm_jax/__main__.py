"""`python -m ssm_jax` and the `ssm-jax` command: the command line (`ssm_jax.cli`), with Ctrl-C an abort
(`ssm_jax.interrupts`) and the machine-independent XLA flags (`ssm_jax.xla_flags`) from before JAX is imported."""

import signal

from ssm_jax import interrupts, watchdog, xla_flags


def main() -> int:
    """Installs the abort and the XLA flags, then runs `ssm_jax.cli.main`; returns its exit code."""
    for signum in interrupts.SIGNALS:
        signal.signal(signum, interrupts.abort)
    xla_flags.configure_entry_point()
    from ssm_jax import distributed  # JAX loads here, seconds during which Ctrl-C already aborts cleanly
    from ssm_jax.cli import main as cli_main

    try:
        with distributed.failing_fast(), watchdog.exit_when_stalled():  # a failing process ends at once; so does
            # one that makes no progress (XLA's CPU runtime can wedge)
            code = cli_main()
            if code:
                raise SystemExit(code)
        return code
    finally:
        interrupts.ignore_while_exiting()


if __name__ == "__main__":
    raise SystemExit(main())
