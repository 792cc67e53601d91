"""A local Binance: the public spot REST endpoints freqtrade/ccxt call, served from candle files.

It lets the unmodified ``freqtrade`` CLI (backtesting, download-data, dry-run) run with no
internet: point ccxt at it with the overlay config from :func:`write_overlay`. The candles are
replayed as if live (see :mod:`learning.exchange.replay`); markets get Binance-like rules (see
:mod:`learning.exchange.market`). Endpoints under ``/api/v3``: ``exchangeInfo``, ``klines``,
``ticker/24hr``, ``depth``, ``time``, ``ping``; anything else is logged as a warning and answered
404 so stray calls are visible.

Python use::

    exchange = LocalExchange(datadir, now_fn=lambda: fixed_now)
    with serve(exchange, port=0) as server:
        ccxt.binance({"urls": {"api": {"public": server.api_url}}, ...})
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from learning.core.errors import LearningError
from learning.exchange.api import (
    DEPTH_DEFAULT,
    KLINES_DEFAULT,
    ApiError,
    LocalExchange,
    invalid_symbol,
)

__all__ = ["ApiError", "LocalExchange", "LocalExchangeServer", "PortInUseError", "ccxt_urls",
           "overlay_config", "serve", "write_overlay"]

log = logging.getLogger(__name__)


class PortInUseError(LearningError):
    """The requested port is taken."""


# --- HTTP ------------------------------------------------------------------------------------

def _int(params: dict[str, str], name: str, default: int | None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                              "'^[0-9]{1,20}$'.") from None


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or "
                              "malformed.")
    return value


def _ticker(ex: LocalExchange, params: dict[str, str]) -> object:
    if "symbol" in params:
        return ex.ticker_24hr(_required(params, "symbol"))
    if "symbols" in params:
        try:
            symbols = json.loads(params["symbols"])
        except ValueError:
            raise invalid_symbol() from None
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise invalid_symbol()
        return ex.tickers_24hr(symbols)
    return ex.tickers_24hr()


_ROUTES: dict[str, Callable[[LocalExchange, dict[str, str]], object]] = {
    "/api/v3/ping": lambda ex, p: {},
    "/api/v3/time": lambda ex, p: ex.server_time(),
    "/api/v3/exchangeInfo": lambda ex, p: ex.exchange_info(),
    "/api/v3/klines": lambda ex, p: ex.klines_json(
        _required(p, "symbol"), _required(p, "interval"), _int(p, "limit", KLINES_DEFAULT),
        _int(p, "startTime", None), _int(p, "endTime", None)),
    "/api/v3/ticker/24hr": _ticker,
    "/api/v3/depth": lambda ex, p: ex.depth(_required(p, "symbol"),
                                            _int(p, "limit", DEPTH_DEFAULT)),
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: ccxt reuses its connections
    # Seconds an idle keep-alive connection is kept: reaps clients that vanished without closing;
    # long enough that a polling bot (every few seconds) never meets a closed connection.
    timeout = 600
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        route = _ROUTES.get(url.path)
        if route is None:
            return self._not_found()
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            result = route(self.server.exchange, params)
            status, body = 200, result if isinstance(result, str) else json.dumps(result)
        except ApiError as err:
            status, body = err.status, json.dumps({"code": err.code, "msg": err.msg})
        except Exception:  # never let one request take the server down
            log.exception("local exchange: %s failed", self.path)
            status, body = 500, json.dumps(
                {"code": -1000, "msg": "An unknown error occurred while processing the request."})
        self._send(status, body)

    def _not_found(self) -> None:
        log.warning("local exchange: unknown request %s %s (answered 404)", self.command,
                    self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._send(404, json.dumps({"code": -1, "msg": f"{self.path} is not served here"}))

    do_POST = do_PUT = do_DELETE = _not_found  # noqa: N815 (private endpoints: never served)

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("local exchange: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], exchange: LocalExchange) -> None:
        self.exchange = exchange
        self.connections: set[socket.socket] = set()
        super().__init__(address, _Handler)


class LocalExchangeServer:
    """A running local exchange; also a context manager that shuts it down."""

    def __init__(self, exchange: LocalExchange, host: str = "127.0.0.1", port: int = 0) -> None:
        try:
            self._server = _Server((host, port), exchange)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise PortInUseError(f"port {port} on {host} is already in use") from None
            raise LearningError(f"cannot listen on {host}:{port}: {err.strerror}") from None
        self.exchange = exchange
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=f"local-exchange-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://host:port``: the value for :func:`write_overlay`."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """ccxt's ``urls.api.public`` for this server."""
        return f"{self.url}/api/v3"

    def shutdown(self) -> None:
        """Stop serving, close open keep-alive connections and the socket."""
        self._server.shutdown()
        for conn in list(self._server.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> LocalExchangeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def serve(exchange: LocalExchange, host: str = "127.0.0.1", port: int = 0) -> LocalExchangeServer:
    """Start serving ``exchange`` in a background thread (port 0: any free port)."""
    if host not in ("127.0.0.1", "localhost"):
        log.warning("local exchange listens on %s: it is meant for 127.0.0.1 only", host)
    return LocalExchangeServer(exchange, host, port)


# --- freqtrade config overlay ----------------------------------------------------------------

def ccxt_urls(url: str) -> dict[str, str]:
    """ccxt binance ``urls.api`` with ``public`` served by ``url`` and every other key pointed at
    it too (under ``/not-served/<key>``), so a stray call shows up as a 404 in our log."""
    import ccxt  # freqtrade's dependency; imported here to keep the server light

    urls = {}
    for key, value in ccxt.binance().urls["api"].items():
        path = urlsplit(value).path if isinstance(value, str) else ""
        urls[key] = f"{url}/not-served/{key}{path}"
    urls["public"] = f"{url}/api/v3"
    return urls


def overlay_config(url: str, scratch_datadir: str | Path) -> dict:
    """The freqtrade config (to pass as a second ``--config``) that uses the local exchange."""
    ccxt_config = {"urls": {"api": ccxt_urls(url)},
                   "options": {"fetchMarkets": {"types": ["spot"]}}}
    return {
        "exchange": {"name": "binance", "enable_ws": False, "only_from_ccxt": True,
                     "ccxt_config": ccxt_config, "ccxt_async_config": ccxt_config},
        "fiat_display_currency": "",
        # A scratch folder: a dry-run with FreqAI writes downloaded (shifted) candles there.
        "datadir": str(Path(scratch_datadir).resolve()),
    }


def write_overlay(path: str | Path, url: str, scratch_datadir: str | Path | None = None) -> Path:
    """Write :func:`overlay_config` atomically to ``path``; the scratch data dir defaults to
    ``<path's folder>/localexchange-data`` and is created."""
    path = Path(path)
    scratch = Path(scratch_datadir) if scratch_datadir else path.parent / "localexchange-data"
    scratch.mkdir(parents=True, exist_ok=True)
    text = json.dumps(overlay_config(url, scratch), indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
