"""The plugin config section parses into frozen dataclasses and rejects bad input by name."""

import dataclasses
import json

import pytest

from learning.core.config import reference_rows
from learning.core.errors import ConfigError
from learning.core.risk import RiskConfig
from learning.strategy.config import LearningConfig, load_learning_config
from tests.conftest import ROOT


def test_load_learning_config_with_missing_section_gives_defaults():
    cfg = load_learning_config({})
    assert cfg.risk == RiskConfig()
    assert cfg.regime.enabled and cfg.regime.detector.timeframe == "1h"
    assert cfg.meta.force_learner is None and cfg.bandit.params.discount == 0.97
    assert cfg.risk.max_position_pct == 0.20
    assert cfg.risk.max_daily_loss_pct == 0.02
    assert cfg.risk.max_drawdown_pct == 0.15


def test_shipped_config_json_parses():
    raw = json.loads((ROOT / "config.json").read_text())
    cfg = load_learning_config(raw)
    assert cfg.identifier == "default"


def test_config_is_frozen():
    cfg = load_learning_config({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.risk.max_position_pct = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"rsk": {}}, "advanced_learning: unknown key(s) 'rsk'"),
        ({"risk": {"max_position": 0.1}}, "advanced_learning.risk: unknown key(s) 'max_position'"),
        ({"risk": {"max_position_pct": "0.2"}}, "advanced_learning.risk.max_position_pct: expected a number"),
        ({"risk": {"max_position_pct": 1.5}}, "advanced_learning.risk.max_position_pct: 1.5 is out of range"),
        ({"risk": {"crisis_cash_only": 1}}, "advanced_learning.risk.crisis_cash_only: expected true or false"),
        ({"pyramiding": {"max_adds": 2.5}}, "advanced_learning.pyramiding.max_adds: expected an integer"),
        ({"pyramiding": {"max_adds": True}}, "advanced_learning.pyramiding.max_adds: expected an integer"),
        ({"risk": []}, "advanced_learning.risk: expected an object"),
        ({"identifier": 3}, "advanced_learning.identifier: expected a string"),
    ],
)
def test_load_learning_config_with_bad_value_names_the_key(section, needle):
    with pytest.raises(ConfigError) as err:
        load_learning_config({"advanced_learning": section})
    assert needle in str(err.value)


def test_integer_accepted_where_a_number_is_expected():
    cfg = load_learning_config({"advanced_learning": {"risk": {"max_position_pct": 1}}})
    assert cfg.risk == RiskConfig(max_position_pct=1.0)
    assert isinstance(cfg.risk.max_position_pct, float)


def test_reference_rows_cover_every_leaf_key():
    keys = {row[0] for row in reference_rows(LearningConfig)}
    assert "advanced_learning.risk.max_drawdown_pct" in keys
    assert "advanced_learning.pyramiding.trim_fraction" in keys
    assert all(row[2] for row in reference_rows(LearningConfig)), "every key documents itself"


def test_nested_tier_sections_are_parsed_by_their_own_config_classes():
    cfg = load_learning_config({"advanced_learning": {
        "meta": {"force_learner": "Balanced"}, "regime": {"enabled": False},
        "bandit": {"params": {"discount": 0.9}}, "router": {"params": {"floor_trades": 5}}}})
    assert cfg.meta.force_learner == "Balanced"
    assert not cfg.regime.enabled and cfg.regime.detector.fit_window == 336
    assert cfg.bandit.params.discount == 0.9 and cfg.router.params.floor_trades == 5
    with pytest.raises(ConfigError, match="fit_windowx"):
        load_learning_config({"advanced_learning": {"regime": {"detector": {"fit_windowx": 3}}}})
    with pytest.raises(ConfigError, match="force_learner"):
        load_learning_config({"advanced_learning": {"meta": {"force_learner": "Nobody"}}})


def test_readme_configuration_reference_matches_the_code():
    from learning.commands.control import config_reference_markdown

    text = (ROOT / "README.md").read_text()
    start = text.index("<!-- config-reference:start")
    body = text[text.index("\n", start) + 1:text.index("<!-- config-reference:end -->")]
    assert body.strip() == config_reference_markdown().strip(), \
        "regenerate the table with `ftlearn config-reference`"
