"""``ftlearn exchange``: serve candle files as a local Binance for offline freqtrade runs.

Typical use (two shells)::

    ftlearn exchange --datadir ../shared/data/binance --overlay user_data/localexchange.json
    freqtrade trade --dry-run --config config.json --config user_data/localexchange.json
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from datetime import timedelta
from pathlib import Path

from learning.core.errors import ConfigError
from learning.data.candles import DATA_DIR_ENV, default_data_dir

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "exchange", help="serve candle files as a local Binance (offline freqtrade runs)",
        description="Serve the spot pairs of a freqtrade data dir through Binance's public REST "
                    "API, replayed as if live (shifted by whole weeks, the last candle in "
                    "progress), until SIGINT/SIGTERM. Prints the URL on the first line. "
                    "The data runs out at most a week after start (plus --min-runway-hours): "
                    "then no new candles appear; restart to re-anchor.")
    p.add_argument("--datadir", type=Path, default=default_data_dir(),
                   help=f"folder of <BASE>_<QUOTE>-<tf>.feather files (default: ${DATA_DIR_ENV})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8123, help="port (0: any free port; default 8123)")
    p.add_argument("--overlay", type=Path,
                   help="write a freqtrade config overlay here (pass it as a second --config)")
    p.add_argument("--scratch-datadir", type=Path,
                   help="datadir written into the overlay, where a dry-run stores downloaded "
                        "(shifted) candles (default: <overlay folder>/localexchange-data)")
    p.add_argument("--min-runway-hours", type=float, default=0.0,
                   help="replay at least this many hours of data before it runs out (the "
                        "offset grows by whole weeks; default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from learning.exchange.server import LocalExchange, serve, write_overlay

    if args.datadir is None:
        raise ConfigError(f"--datadir is required (or set ${DATA_DIR_ENV})")
    if args.port < 0 or args.port > 65535:
        raise ConfigError(f"--port {args.port} is not a port number (0..65535)")
    if args.min_runway_hours < 0:
        raise ConfigError(f"--min-runway-hours {args.min_runway_hours} must be >= 0")
    datadir = args.datadir.resolve()
    if args.overlay:
        scratch = args.scratch_datadir or args.overlay.parent / "localexchange-data"
        if scratch.resolve() == datadir:
            raise ConfigError(f"--scratch-datadir {scratch} is the served data dir: a dry-run "
                              "would write shifted candles into it")
    exchange = LocalExchange(datadir, min_runway=timedelta(hours=args.min_runway_hours))
    stop = threading.Event()
    with serve(exchange, args.host, args.port) as server, _stop_on_signals(stop):
        # Written after binding so that --port 0 gets the real port.
        if args.overlay:
            write_overlay(args.overlay, server.url, args.scratch_datadir)
        print(server.url, flush=True)
        log.info("serving %d pairs (%s) from %s, shifted by %d weeks; api %s",
                 len(exchange.pairs), ", ".join(exchange.pairs), datadir,
                 exchange.offset // timedelta(weeks=1), server.api_url)
        if args.overlay:
            log.info("overlay written to %s: pass it as a second --config", args.overlay)
        while not stop.wait(0.5):
            pass
    log.info("local exchange stopped")
    return 0


class _stop_on_signals:  # noqa: N801 (used as a context manager)
    """Set ``stop`` on SIGINT/SIGTERM while active; restores the previous handlers after."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.previous: dict[int, object] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, lambda *_: self.stop.set())

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
