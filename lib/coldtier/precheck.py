"""The launcher's run ahead: ``run`` as far as it goes without Spark (scripts/spark-submit.sh
calls ``prerun`` before it starts any JVM)."""

from __future__ import annotations

from typing import Any

from coldtier import config as config_mod
from coldtier.cli import dispatch, fail, parser
from coldtier.config import AppConfig
from coldtier.errors import EXIT_INTERNAL, EXIT_RUNTIME, NeedsSpark, classify


def _no_spark(cfg: AppConfig) -> Any:
    raise NeedsSpark()


def prerun(job_args: list[str], remote_driver: bool = False) -> int | None:
    """For the launcher (scripts/spark-submit.sh), before any JVM: ``run`` as far as it goes
    without Spark. Returns its exit code when the run ends there: nothing to do (the caught-up
    lines and the metrics written, exit 0), or a failure the driver would meet the same way (a
    held lock, a wrong password, a missing cursor column: the same message and code, in about a
    second instead of a JVM's start). None: launch (rows to move, a processing-time loop, or
    another command). With the driver in the cluster (``remote_driver``) a service this host
    cannot reach may still be reachable from there: such failures launch too."""
    try:
        args = parser().parse_args(job_args)
    except SystemExit as exc:  # usage error (argparse said why) or --help
        return int(exc.code or 0)
    if args.command != "run":
        return None
    secrets: tuple[str, ...] = ()
    try:
        cfg = config_mod.load(args.config)
        secrets = cfg.secrets()
        return dispatch(cfg, args, _no_spark)
    except NeedsSpark:
        return None
    except Exception as exc:
        code, what = classify(exc)
        if remote_driver and code in (EXIT_RUNTIME, EXIT_INTERNAL):
            return None
        return fail(code, what, exc, secrets)


