"""The local exchange: ccxt's binance client against an in-process server on synthetic candles,
bad input, the CLI, the real data dir, and (slow) the real freqtrade CLI downloading from it."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import ccxt
import numpy as np
import pandas as pd
import pytest

from learning.cli import main as cli_main
from learning.core.errors import DataError
from learning.exchange.server import LocalExchange, PortInUseError, serve, write_overlay
from tests.conftest import ROOT, make_ohlcv

NOW = datetime(2026, 3, 4, 10, 2, 30, tzinfo=UTC)  # a Wednesday, half-way into a 5m candle
WEEK = timedelta(weeks=1)
FIVE_MIN = 300_000
N_CANDLES = 5000  # ~17 days: more than the week the replay may leave after now


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def write_pair(datadir: Path, pair: str, df: pd.DataFrame, timeframe: str = "5m") -> None:
    df.reset_index(drop=True).to_feather(datadir / f"{pair.replace('/', '_')}-{timeframe}.feather")


def client(url: str) -> ccxt.binance:
    return ccxt.binance({"urls": {"api": {"public": url}}, "enableRateLimit": False,
                         "options": {"fetchMarkets": {"types": ["spot"]}}})


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    datadir = tmp_path_factory.mktemp("exchange-data")
    btc = make_ohlcv(N_CANDLES, seed=1, price=60_000.0)
    xrp = make_ohlcv(N_CANDLES, seed=2, price=2.0)
    write_pair(datadir, "BTC/USDT", btc)
    write_pair(datadir, "XRP/USDT", xrp)
    clock = Clock(NOW)
    exchange = LocalExchange(datadir, now_fn=clock)
    with serve(exchange, port=0) as server:
        yield SimpleNamespace(datadir=datadir, btc=btc, xrp=xrp, clock=clock, exchange=exchange,
                              server=server, ccxt=client(server.api_url))


@pytest.fixture(autouse=True)
def _reset_clock(request: pytest.FixtureRequest) -> None:
    if "env" in request.fixturenames:
        request.getfixturevalue("env").clock.now = NOW


def shifted(df: pd.DataFrame, offset: timedelta) -> pd.DataFrame:
    out = df.copy()
    out["date"] = out["date"] + offset
    return out.set_index("date")


# --- markets and replay clock -----------------------------------------------------------------

def test_load_markets_with_synthetic_pairs_has_binance_rules(env) -> None:
    markets = env.ccxt.load_markets(reload=True)

    assert set(markets) == {"BTC/USDT", "XRP/USDT"}
    btc, xrp = markets["BTC/USDT"], markets["XRP/USDT"]
    assert btc["active"] and btc["spot"] and btc["type"] == "spot"
    assert btc["precision"]["price"] == 0.01 and btc["precision"]["amount"] == 0.00001
    assert xrp["precision"]["price"] == 0.0001 and xrp["precision"]["amount"] == 0.1
    assert btc["limits"]["cost"]["min"] == 5.0 and btc["limits"]["amount"]["min"] == 0.00001
    assert btc["limits"]["price"]["min"] == 0.01 and btc["limits"]["market"]["max"] > 0


def test_offset_with_fixed_clock_is_smallest_whole_week_and_keeps_weekdays(env) -> None:
    offset = env.exchange.offset
    newest = env.btc["date"].iloc[-1].to_pydatetime()

    assert offset % WEEK == timedelta(0)
    assert newest + offset >= NOW > newest + offset - WEEK
    rows = env.exchange.klines("BTCUSDT", "5m", 1000)
    real = shifted(env.btc, offset)
    served = pd.DatetimeIndex([pd.Timestamp(r[0], unit="ms", tz="UTC") for r in rows[:-1]])
    assert np.allclose([float(r[4]) for r in rows[:-1]], real.loc[served, "close"])
    assert ((served - offset).day_of_week == served.day_of_week).all()


def test_fetch_ohlcv_with_since_paging_over_1000_candles_has_no_gaps_or_duplicates(env) -> None:
    first = ms(NOW - timedelta(days=5)) // FIVE_MIN * FIVE_MIN  # 1440 candles: two pages +
    since = first
    candles: list[list] = []
    while True:
        page = env.ccxt.fetch_ohlcv("BTC/USDT", "5m", since=since, limit=1000)
        if not page:
            break
        candles += page
        since = page[-1][0] + FIVE_MIN

    times = np.array([c[0] for c in candles])
    assert len(candles) > 1000
    assert times[0] == first
    assert (np.diff(times) == FIVE_MIN).all()
    assert times[-1] == ms(NOW) // FIVE_MIN * FIVE_MIN  # the candle in progress, none after now


def test_klines_at_mid_candle_serves_interpolated_candle_in_progress(env) -> None:
    real = shifted(env.btc, env.exchange.offset)
    current = pd.Timestamp(NOW).floor("5min")
    o, h, lo, c, v = real.loc[current, ["open", "high", "low", "close", "volume"]]

    rows = env.ccxt.fetch_ohlcv("BTC/USDT", "5m", limit=3)
    env.clock.now = NOW + timedelta(seconds=60)  # 0.5 -> 0.7 of the candle
    later = env.ccxt.fetch_ohlcv("BTC/USDT", "5m", limit=3)

    assert rows[-1][0] == ms(current)
    assert rows[-1][1] == pytest.approx(o)
    assert rows[-1][4] == pytest.approx(o + 0.5 * (c - o))
    assert rows[-1][5] == pytest.approx(0.5 * v)
    assert max(o, rows[-1][4]) <= rows[-1][2] <= h and lo <= rows[-1][3] <= min(o, rows[-1][4])
    assert rows[-2][4] == pytest.approx(real.loc[current - pd.Timedelta("5min"), "close"])
    assert later[-1][4] == pytest.approx(o + 0.7 * (c - o))
    assert later[-1][4] != rows[-1][4]


def test_klines_with_future_candles_changed_serves_identical_rows(tmp_path: Path) -> None:
    df = make_ohlcv(N_CANDLES, seed=3, price=100.0)
    altered = df.copy()
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    write_pair(a_dir, "ABC/USDT", df)
    a = LocalExchange(a_dir, now_fn=lambda: NOW)
    cut = NOW - a.offset  # real time of now: candles opened after it are the future
    future = altered["date"] > pd.Timestamp(cut)
    altered.loc[future, ["open", "high", "low", "close"]] *= 1.5
    write_pair(b_dir, "ABC/USDT", altered)
    b = LocalExchange(b_dir, now_fn=lambda: NOW)

    assert future.any() and a.offset == b.offset
    for interval in ("5m", "1h", "1d"):
        assert a.klines_json("ABCUSDT", interval, 1000) == b.klines_json("ABCUSDT", interval, 1000)
    assert a.ticker_24hr("ABCUSDT") == b.ticker_24hr("ABCUSDT")


def test_resampled_1h_with_only_5m_file_equals_aggregated_5m(env) -> None:
    hours = env.ccxt.fetch_ohlcv("BTC/USDT", "1h", limit=48)
    fives = env.ccxt.fetch_ohlcv("BTC/USDT", "5m", since=hours[0][0], limit=1000)

    df = pd.DataFrame(fives, columns=["t", "o", "h", "l", "c", "v"])
    df["hour"] = df["t"] // 3_600_000 * 3_600_000
    agg = df.groupby("hour").agg(o=("o", "first"), h=("h", "max"), l=("l", "min"),
                                 c=("c", "last"), v=("v", "sum"))
    got = pd.DataFrame(hours, columns=["t", "o", "h", "l", "c", "v"]).set_index("t")
    assert list(got.index) == list(agg.index)
    assert np.allclose(got.to_numpy(), agg.to_numpy())  # the hour in progress included
    assert hours[-1][0] == ms(NOW) // 3_600_000 * 3_600_000


def test_native_1h_file_ending_early_is_served_then_continued_from_5m(tmp_path: Path) -> None:
    five = make_ohlcv(N_CANDLES, seed=6)
    hourly = five.set_index("date").resample("1h").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    native = hourly.iloc[: len(hourly) // 2].reset_index()
    native["volume"] *= 10  # marks the rows that come from the native file
    write_pair(tmp_path, "BTC/USDT", five)
    write_pair(tmp_path, "BTC/USDT", native, "1h")
    exchange = LocalExchange(tmp_path, now_fn=lambda: NOW)

    rows = exchange.klines("BTCUSDT", "1h", 1000, start_ms=0)
    served = pd.DataFrame([r[:6] for r in rows], columns=["t", *hourly.columns]).astype(float)
    real = shifted(hourly.reset_index(), exchange.offset)
    dates = pd.to_datetime(served["t"], unit="ms", utc=True)
    from_native = (dates < native["date"].iloc[-1] + exchange.offset + pd.Timedelta("1h")).values

    assert from_native.sum() == len(native) and (~from_native[:-1]).sum() > 100
    assert (np.diff(served["t"]) == 3_600_000).all()
    expected = real.loc[dates, "volume"].to_numpy()
    assert np.allclose(served["volume"][from_native], 10 * expected[from_native])
    assert np.allclose(served["volume"][~from_native][:-1], expected[~from_native][:-1])


def test_weekly_and_daily_candles_with_replay_open_on_day_and_monday_boundaries(env) -> None:
    weeks = env.exchange.klines("BTCUSDT", "1w", 5)
    days = env.exchange.klines("BTCUSDT", "1d", 5)

    assert all(datetime.fromtimestamp(r[0] / 1000, UTC).weekday() == 0 for r in weeks)
    assert all(r[0] % 86_400_000 == 0 and r[6] == r[0] + 86_400_000 - 1 for r in days)


# --- ticker, book, time -----------------------------------------------------------------------

def test_fetch_ticker_and_tickers_at_now_match_candle_in_progress(env) -> None:
    last_candle = env.ccxt.fetch_ohlcv("BTC/USDT", "5m", limit=1)[-1]
    ticker = env.ccxt.fetch_ticker("BTC/USDT")
    tickers = env.ccxt.fetch_tickers()

    assert set(tickers) == {"BTC/USDT", "XRP/USDT"}
    assert ticker["last"] == pytest.approx(last_candle[4], abs=1e-8)
    assert ticker["bid"] <= ticker["last"] < ticker["ask"]
    assert ticker["ask"] - ticker["bid"] == pytest.approx(0.01)
    assert ticker["low"] <= ticker["last"] <= ticker["high"]
    assert ticker["baseVolume"] > 0 and ticker["timestamp"] == ms(NOW)
    assert tickers["BTC/USDT"]["last"] == ticker["last"]


def test_fetch_order_book_with_limit_20_has_one_tick_spread_and_sorted_levels(env) -> None:
    book = env.ccxt.fetch_order_book("XRP/USDT", limit=20)
    bids, asks = np.array(book["bids"]), np.array(book["asks"])
    ticker = env.ccxt.fetch_ticker("XRP/USDT")

    assert len(bids) == len(asks) == 20
    assert (np.diff(bids[:, 0]) < 0).all() and (np.diff(asks[:, 0]) > 0).all()
    assert asks[0, 0] - bids[0, 0] == pytest.approx(0.0001)
    assert bids[0, 0] <= ticker["last"] < asks[0, 0]
    assert np.allclose(np.round(bids[:, 1] / 0.1), bids[:, 1] / 0.1)  # lot step 0.1
    assert (bids[:, 0] * bids[:, 1] >= 5).all() and (asks[:, 1] > 0).all()
    assert ticker["bid"] == bids[0, 0] and ticker["bidVolume"] == bids[0, 1]


def test_fetch_time_with_injected_clock_returns_its_time(env) -> None:
    env.clock.now = NOW + timedelta(minutes=7)
    assert env.ccxt.fetch_time() == ms(NOW + timedelta(minutes=7))
    assert http_get(f"{env.server.api_url}/ping") == (200, "{}")


# --- errors -----------------------------------------------------------------------------------

def test_klines_with_unknown_symbol_or_interval_answers_binance_error(env) -> None:
    api = env.server.api_url
    assert http_get(f"{api}/klines?symbol=DOGEUSDT&interval=5m") == (
        400, json.dumps({"code": -1121, "msg": "Invalid symbol."}))
    status, body = http_get(f"{api}/klines?symbol=BTCUSDT&interval=7m")
    assert status == 400 and json.loads(body)["code"] == -1120
    status, body = http_get(f"{api}/klines?symbol=BTCUSDT&interval=1m")  # finer than the data
    assert status == 400 and json.loads(body)["code"] == -1120
    status, body = http_get(f"{api}/klines?symbol=BTCUSDT&interval=5m&limit=x")
    assert status == 400 and json.loads(body)["code"] == -1100
    with pytest.raises(ccxt.BadSymbol):
        env.ccxt.publicGetTicker24hr({"symbol": "NOPEUSDT"})


def test_unknown_path_is_logged_and_answered_404(env, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="learning.exchange.server"):
        status, _ = http_get(f"{env.server.url}/not-served/sapi/sapi/v1/capital/config/getall")
    assert status == 404
    assert "/not-served/sapi/sapi/v1/capital/config/getall" in caplog.text


def test_serve_with_port_in_use_raises_clear_error(env, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            serve(env.exchange, port=port)
        code = cli_main(["exchange", "--datadir", str(env.datadir), "--port", str(port)])
    assert code == 2
    assert f"port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err


def test_exchange_with_dir_without_feather_files_raises_error_naming_dir(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no candles here")
    with pytest.raises(DataError, match=str(tmp_path)):
        LocalExchange(tmp_path, now_fn=lambda: NOW)


def test_exchange_with_corrupt_file_skips_that_pair_with_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_pair(tmp_path, "BTC/USDT", make_ohlcv(500))
    (tmp_path / "ETH_USDT-5m.feather").write_bytes(b"not a feather file")
    with caplog.at_level(logging.WARNING):
        exchange = LocalExchange(tmp_path, now_fn=lambda: NOW)
    assert list(exchange.pairs) == ["BTCUSDT"]
    assert "ETH_USDT-5m.feather" in caplog.text

    (tmp_path / "BTC_USDT-5m.feather").write_bytes(b"broken too")
    with pytest.raises(DataError, match="no usable candle files"):
        LocalExchange(tmp_path, now_fn=lambda: NOW)


def test_klines_with_nan_and_zero_volume_rows_skip_nan_and_keep_zero_volume(
        tmp_path: Path) -> None:
    df = make_ohlcv(N_CANDLES, seed=4)
    df.loc[1500, "close"] = np.nan
    df.loc[1501, ["open", "high", "low", "close"]] = np.nan
    df.loc[1502, "volume"] = 0.0
    df = df.drop(index=[1600, 1601])  # a gap
    write_pair(tmp_path, "BTC/USDT", df)
    exchange = LocalExchange(tmp_path, now_fn=lambda: NOW)
    start = ms(df["date"].iloc[0].to_pydatetime() + exchange.offset)

    with serve(exchange) as server:
        _, body = http_get(f"{server.api_url}/klines?symbol=BTCUSDT&interval=5m&limit=1000"
                           f"&startTime={start + 1400 * FIVE_MIN}")
        hourly = client(server.api_url).fetch_ohlcv("BTC/USDT", "1h", limit=1000)
    rows = json.loads(body)

    assert "NaN" not in body and "nan" not in body and "Infinity" not in body
    times = {r[0] for r in rows}
    t = start + np.arange(1400, 1700) * FIVE_MIN
    assert t[100] not in times and t[101] not in times and t[200] not in times
    assert t[102] in times and t[99] in times
    assert next(r for r in rows if r[0] == t[102])[5] == "0.00000000"
    assert all(np.isfinite(hourly).all(axis=1))


def test_replay_past_end_of_data_serves_last_real_candle_and_warns(
        env, caplog: pytest.LogCaptureFixture) -> None:
    env.clock.now = NOW + 2 * WEEK
    real = shifted(env.btc, env.exchange.offset)
    with caplog.at_level(logging.WARNING):
        rows = env.exchange.klines("BTCUSDT", "5m", 2)
        ticker = env.exchange.ticker_24hr("BTCUSDT")

    assert rows[-1][0] == ms(real.index[-1].to_pydatetime())
    assert float(rows[-1][4]) == pytest.approx(real["close"].iloc[-1])
    assert float(ticker["lastPrice"]) == pytest.approx(real["close"].iloc[-1])
    assert "past the end of the data" in caplog.text


def test_min_runway_with_little_data_left_adds_whole_weeks(env) -> None:
    plain = env.exchange.offset
    newest = env.btc["date"].iloc[-1].to_pydatetime()
    runway = newest + plain - NOW + timedelta(hours=1)  # one hour more than the data gives
    longer = LocalExchange(env.datadir, now_fn=lambda: NOW, min_runway=runway)
    assert longer.offset == plain + WEEK


# --- overlay and CLI --------------------------------------------------------------------------

def test_write_overlay_with_defaults_points_every_ccxt_url_at_server(tmp_path: Path) -> None:
    path = write_overlay(tmp_path / "cfg" / "overlay.json", "http://127.0.0.1:9999")
    cfg = json.loads(path.read_text())
    ex = cfg["exchange"]

    assert ex["name"] == "binance" and ex["enable_ws"] is False and ex["only_from_ccxt"] is True
    assert ex["ccxt_config"] == ex["ccxt_async_config"]
    urls = ex["ccxt_config"]["urls"]["api"]
    assert set(urls) == set(ccxt.binance().urls["api"])
    assert urls["public"] == "http://127.0.0.1:9999/api/v3"
    assert all(u.startswith("http://127.0.0.1:9999/not-served/") for k, u in urls.items()
               if k != "public")
    assert ex["ccxt_config"]["options"] == {"fetchMarkets": {"types": ["spot"]}}
    assert cfg["fiat_display_currency"] == ""
    assert Path(cfg["datadir"]) == (tmp_path / "cfg" / "localexchange-data").resolve()
    assert Path(cfg["datadir"]).is_dir()
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_cli_with_port_0_prints_url_writes_overlay_and_stops_on_sigterm(env,
                                                                       tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "learning.cli", "exchange", "--datadir", str(env.datadir),
         "--port", "0", "--overlay", str(overlay)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        status, body = http_get(f"{url}/api/v3/ping")
        cfg = json.loads(overlay.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)

    assert url.startswith("http://127.0.0.1:") and (status, body) == (200, "{}")
    assert cfg["exchange"]["ccxt_config"]["urls"]["api"]["public"] == f"{url}/api/v3"
    assert proc.returncode == 0, err
    assert "local exchange stopped" in err


# --- real data --------------------------------------------------------------------------------

def test_real_data_dir_serves_binance_rules_and_shifted_candles(real_data_dir: Path) -> None:
    exchange = LocalExchange(real_data_dir)
    with serve(exchange) as server:
        api = client(server.api_url)
        markets = api.load_markets()
        candles = api.fetch_ohlcv("BTC/USDT", "5m", limit=1000)

    assert markets["BTC/USDT"]["precision"] == pytest.approx(
        {"price": 0.01, "amount": 0.00001, "base": 1e-8, "quote": 1e-8})
    assert markets["XRP/USDT"]["precision"]["price"] == 0.0001
    assert markets["XRP/USDT"]["precision"]["amount"] == 0.1
    real = pd.read_feather(real_data_dir / "BTC_USDT-5m.feather")
    real = shifted(real, exchange.offset)
    got = pd.DataFrame(candles[:-1], columns=["t", "o", "h", "l", "c", "v"])
    dates = pd.to_datetime(got["t"], unit="ms", utc=True)
    assert len(got) == 999 and exchange.offset % WEEK == timedelta(0)
    assert np.allclose(got[["o", "h", "l", "c", "v"]], real.loc[dates, ["open", "high", "low",
                                                                      "close", "volume"]])


# --- the real freqtrade CLI -------------------------------------------------------------------

FREQTRADE_CONFIG = {
    "max_open_trades": 1, "stake_currency": "USDT", "stake_amount": 20, "dry_run": True,
    "dry_run_wallet": 1000, "trading_mode": "spot", "timeframe": "5m",
    "entry_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
    "exit_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
    "exchange": {"name": "binance", "key": "", "secret": "", "pair_whitelist": ["BTC/USDT"]},
    "pairlists": [{"method": "StaticPairList"}],
}


@pytest.mark.slow
def test_freqtrade_download_data_against_local_exchange_writes_shifted_candles(
        tmp_path: Path) -> None:
    datadir, out = tmp_path / "src", tmp_path / "downloaded"
    datadir.mkdir()
    df = make_ohlcv(N_CANDLES, seed=5, price=50_000.0)
    write_pair(datadir, "BTC/USDT", df)
    (tmp_path / "user_data").mkdir()
    config = tmp_path / "config.json"
    config.write_text(json.dumps(FREQTRADE_CONFIG))
    exchange = LocalExchange(datadir)  # wall clock: freqtrade uses it too
    freqtrade = Path(sys.executable).with_name("freqtrade")

    with serve(exchange) as server:
        overlay = write_overlay(tmp_path / "overlay.json", server.url)
        result = subprocess.run(
            [str(freqtrade), "download-data", "--config", str(config), "--config", str(overlay),
             "--userdir", str(tmp_path / "user_data"), "--datadir", str(out),
             "--pairs", "BTC/USDT", "--timeframes", "5m", "--days", "2"],
            capture_output=True, text=True, timeout=300, env={**os.environ, "NO_COLOR": "1"})
        end = exchange.now()

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    got = pd.read_feather(out / "BTC_USDT-5m.feather").set_index("date")
    real = shifted(df, exchange.offset)
    complete = got.index < pd.Timestamp(end).floor("5min")
    assert len(got) >= 2 * 288 - 12
    assert got.index[0] <= pd.Timestamp(end) - pd.Timedelta(days=2) + pd.Timedelta("5min")
    assert (got.index.to_series().diff().iloc[1:] == pd.Timedelta("5min")).all()
    assert got.index[-1] <= pd.Timestamp(end)
    cols = ["open", "high", "low", "close", "volume"]
    assert np.allclose(got.loc[complete, cols], real.loc[got.index[complete], cols])
