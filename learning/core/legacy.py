"""Old module paths that saved files still name.

Before the package got its subpackages (issue 11) every module lived directly under
``learning``. Two kinds of saved file name a class by its module path, because the libraries
that write them pickle objects: FreqAI saves a ``TSAMAERegressor`` model with cloudpickle
(``learning.freqai_tsamae.TSAMAEPredictor``) and stable-baselines3 pickles a ``PPOPyramiding``
model's ``policy_kwargs`` (``learning.pyramid_policy.TSAMAEExtractor``). Everything this
package writes itself (JSON state, torch ``weights_only`` checkpoints, the policy database)
names no module. The finder below answers an import of an old path with the module that now
holds the code, so those files keep loading; nothing in this package imports an old path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

#: Old module path -> new module path, for every module whose objects saved files pickle
#: (found by saving each kind of file with the old code: ``tests/fixtures/pre_layout``).
LEGACY_MODULES: dict[str, str] = {
    "learning.freqai_tsamae": "learning.encoder.freqai",
    "learning.pyramid_policy": "learning.agents.pyramid_policy",
}


class _LegacyFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to the module object at its new path (same object)."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in LEGACY_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(LEGACY_MODULES[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was executed under its new name."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (``import learning`` does this)."""
    if not any(isinstance(f, _LegacyFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _LegacyFinder())
