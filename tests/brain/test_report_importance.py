"""ftlearn report: per-regime component and SHAP feature importance."""

import json

import pandas as pd

from learning.brain.report import component_importance, shap_importance


def test_component_importance_is_the_mean_absolute_contribution_per_regime():
    decisions = [{"regime": "CHOPPY", "contributions": {"technical": 0.2, "theme": -0.1}},
                 {"regime": "CHOPPY", "contributions": {"technical": -0.4, "theme": 0.3}},
                 {"regime": "CRISIS", "contributions": {"technical": 0.1}},
                 {"regime": "CHOPPY"}]  # an older decision without contributions
    out = component_importance(decisions)
    assert abs(out.loc["CHOPPY", "technical"] - 0.3) < 1e-12
    assert abs(out.loc["CHOPPY", "theme"] - 0.2) < 1e-12
    assert out.loc["CHOPPY", "decisions"] == 2 and out.loc["CRISIS", "decisions"] == 1
    assert component_importance([{"regime": "CHOPPY"}]) is None


def test_shap_importance_groups_windows_by_the_regime_they_traded_in(tmp_path):
    t1, t2 = 1704067200, 1704067200 + 7 * 86400  # 2024-01-01, 2024-01-08
    for t, shares in ((t1, {"%-rsi": 0.7, "%-roc": 0.3}), (t2, {"%-rsi": 0.2, "%-roc": 0.8})):
        folder = tmp_path / f"sub-train-BTC_{t}"
        folder.mkdir()
        (folder / f"cb_btc_{t}_metadata.json").write_text(
            json.dumps({"shap": {"label": "&-s_return", "shares": shares}}))
    dates = pd.date_range("2024-01-01", periods=14 * 24, freq="1h", tz="UTC")
    regimes = pd.DataFrame({"date": dates, "regime": ["BULL_MOMENTUM"] * (7 * 24)
                            + ["BEAR_DEFENSIVE"] * (7 * 24)})
    out = shap_importance(tmp_path, regimes)
    assert out.loc["BULL_MOMENTUM", "%-rsi"] == 0.7
    assert out.loc["BEAR_DEFENSIVE", "%-roc"] == 0.8
    assert out["windows"].tolist() == [1, 1]
    assert shap_importance(tmp_path / "missing", regimes) is None
