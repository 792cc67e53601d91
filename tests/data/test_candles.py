"""Reading freqtrade candle files: each kind of bad input stops with a message naming it."""

from __future__ import annotations

import pytest

from learning.core.errors import DataError
from learning.data.candles import load_candles
from learning.data.synth import SynthConfig, generate_market, write_market


@pytest.fixture(scope="module")
def datadir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    write_market(generate_market(SynthConfig(days=3, pairs=("BTC/USDT", "ETH/USDT"), seed=4)),
                 out, ("5m",))
    return out


def test_pair_missing_a_timeframe_names_the_timeframes_it_has(datadir):
    with pytest.raises(DataError, match=r"no candles for BTC/USDT 1h: .*BTC_USDT-1h\.feather "
                                        r"is missing; available for BTC/USDT: 5m"):
        load_candles(datadir, "BTC/USDT", "1h")


def test_pair_not_in_the_data_dir_says_so(datadir):
    with pytest.raises(DataError, match="SOL/USDT is not in the data dir"):
        load_candles(datadir, "SOL/USDT", "5m")


def test_corrupt_feather_file_is_named(datadir, tmp_path):
    bad = tmp_path / "BTC_USDT-5m.feather"
    bad.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(DataError, match=r"BTC_USDT-5m\.feather is not a readable feather file"):
        load_candles(tmp_path, "BTC/USDT", "5m")
