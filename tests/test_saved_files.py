"""Files saved before the package layout change load with the new layout (issue 11).

``tests/fixtures/pre_layout`` holds one file of every kind the plugin saves, written by the code
before ``learning/`` got its subpackages (see its README). Two of them name old module paths
because FreqAI and stable-baselines3 pickle objects (``learning.core.legacy`` maps those); the
rest must not name any module at all.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import ROOT

OLD = ROOT / "tests" / "fixtures" / "pre_layout"
MODULE_PATH = re.compile(rb"learning\.[a-z_]+\.?[A-Za-z_]*")


def test_freqai_tsamae_model_saved_before_the_move_predicts_the_same_in_a_fresh_process(tmp_path):
    """FreqAI loads it with cloudpickle; the pickle names learning.freqai_tsamae."""
    assert b"learning.freqai_tsamae" in (OLD / "tsamae_model.joblib").read_bytes()
    code = (
        "import cloudpickle, numpy as np, torch\n"
        f"m = cloudpickle.load(open({str(OLD / 'tsamae_model.joblib')!r}, 'rb'))\n"
        f"e = np.load({str(OLD / 'tsamae_expected.npz')!r})\n"
        "assert np.array_equal(m.predict(e['x']), e['head'])\n"
        "emb = m.encoder.embed(torch.from_numpy(e['w'])).detach().numpy()\n"
        "assert np.array_equal(emb, e['emb'])\n"
        "assert type(m).__module__ == 'learning.encoder.freqai'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=120)


def test_ppo_pyramiding_model_saved_before_the_move_emits_the_same_grid(tmp_path):
    """stable-baselines3 pickles policy_kwargs, which name learning.pyramid_policy."""
    from stable_baselines3 import PPO

    from tests.agents.test_pyramid_freqai import TINY, _model_and_kitchen

    data = json.loads(zipfile.ZipFile(OLD / "ppo_pyramid_model.zip").read("data"))
    assert b"learning.pyramid_policy" in base64.b64decode(data["policy_kwargs"][":serialized:"])
    model, dk = _model_and_kitchen(tmp_path, seed=0, cycles=1)
    model.model = PPO.load(OLD / "ppo_pyramid_model.zip", device="cpu")
    frame = pd.read_feather(OLD / "ppo_pyramid_frame.feather")
    dk.find_features(frame)
    dk.find_labels(frame)
    got, _ = model.predict(frame, dk)
    expected = pd.read_feather(OLD / "ppo_pyramid_expected.feather")
    # The first window's rows were completed by the training tail, which FreqAI keeps in the
    # window's metadata file, not in the model zip; every later row depends on the model alone.
    window = TINY["window"]
    pd.testing.assert_frame_equal(got.iloc[window:].reset_index(drop=True),
                                  expected.iloc[window:].reset_index(drop=True))


def test_encoder_checkpoint_saved_before_the_move_embeds_the_same():
    from learning.encoder.pretrain import load_checkpoint

    model, meta = load_checkpoint(OLD / "encoder.pt")
    windows = np.load(OLD / "tsamae_expected.npz")["w"]
    emb = model.eval().embed(torch.from_numpy(windows)).detach().numpy()
    np.testing.assert_array_equal(emb, np.load(OLD / "encoder_expected_emb.npy"))
    assert meta["last_candle"] == "2025-01-01T00:00:00+00:00"


@pytest.fixture
def old_state(tmp_path) -> Path:
    folder = tmp_path / "state"
    shutil.copytree(OLD / "state", folder)
    return folder


def test_agents_brain_risk_and_policy_db_saved_before_the_move_load(old_state):
    from learning.agents.trade_agent import AGENT_SCHEMA, AgentSet, agent_state_name
    from learning.brain.decision import SCHEMA_VERSION as BRAIN_SCHEMA
    from learning.brain.decision import Brain
    from learning.core.risk import SCHEMA_VERSION as RISK_SCHEMA
    from learning.core.risk import RiskState
    from learning.core.store import StateStore
    from learning.router.router import Router
    from learning.strategy.config import load_learning_config

    cfg = load_learning_config({})
    store = StateStore(old_state)
    payloads = {name: store.load_torch(agent_state_name(name, offline=True),
                                       schema=AGENT_SCHEMA)[0]["payload"]
                for name in ("Conservative", "Aggressive", "Balanced")}
    agents = AgentSet.from_checkpoints(payloads, cfg.meta.learners)
    assert not agents.errors and all(a is not None for a in agents.agents.values())

    brain_state = store.load_json("brain", schema=BRAIN_SCHEMA)
    brain = Brain(cfg, brain_state)
    raw = json.loads((old_state / "brain.json").read_text())["data"]
    assert json.loads(json.dumps(brain.to_state()["meta"]["arms"])) == raw["meta"]["arms"]

    risk = RiskState.from_state(store.load_json("risk", schema=RISK_SCHEMA))
    restored = risk.to_state()
    assert restored.pop("control_seen") == 0  # added later: no command applied yet
    assert restored == json.loads((old_state / "risk.json").read_text())["data"]

    report = {r.name: r for r in Router(old_state / "policy_bandit.db", cfg.router.params)
              .report(np.random.default_rng(0))}
    assert {n: r.trades for n, r in report.items()} == {"rules-v1": 30, "rules-v2": 30}
    assert not list(old_state.glob("*.corrupt-*")), "nothing was quarantined"


def test_files_the_plugin_writes_itself_name_no_module(old_state):
    """JSON state, torch checkpoints and the policy database are module-path free, so a later
    move cannot break them (only the two pickled FreqAI/sb3 files need the legacy map)."""
    for path in [*old_state.iterdir(), OLD / "encoder.pt"]:
        names = [m for m in MODULE_PATH.findall(path.read_bytes())
                 if not m.startswith((b"learning_rate", b"learning.learning"))]
        assert not names, f"{path.name} names {names[:3]}"
