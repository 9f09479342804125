"""``python -m chembed --data-dir DIR [--port N]``: run the embedded ClickHouse server.

The password is read from the environment variable named by ``--password-env``
(default ``CHEMBED_PASSWORD``) so that it never shows in ``ps``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from chembed.server import EmbeddedClickHouse, ServerConfig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="chembed", description=__doc__)
    ap.add_argument("--data-dir", required=True, help="MergeTree data directory (kept across restarts)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18123, help="0 picks a free port")
    ap.add_argument("--user", default="default")
    ap.add_argument("--password-env", default="CHEMBED_PASSWORD",
                    help="environment variable holding the user's password (unset = empty)")
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--gate-dir", help="test-only fault gates keyed by log_comment (see server.Gates)")
    ap.add_argument("--verbose", action="store_true", help="log every request (never secrets)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s chembed %(levelname)s %(message)s")
    config = ServerConfig(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        user=args.user,
        password=os.environ.get(args.password_env, ""),
        verbose=args.verbose,
        gate_dir=args.gate_dir,
    )
    server = EmbeddedClickHouse(config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.shutdown())
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(str(server.port))
        os.replace(tmp, args.port_file)
    print(f"chembed {server.engine.version} listening on http://{args.host}:{server.port} "
          f"data={config.data_dir}", file=sys.stderr, flush=True)
    server.serve_forever()
    print("chembed stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
