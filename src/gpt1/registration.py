"""Register the GPT-1 classes with transformers' Auto classes, the moment transformers loads them.

`import gpt1` promises that `AutoConfig`, `AutoModel*` and `AutoTokenizer` know gpt1 folders without
`trust_remote_code`. Registering needs torch and transformers, which take seconds to import, and
`gpt1 --help` (which also runs `import gpt1`) should print at once. So registration waits for
transformers: if its Auto modules are already imported, it happens now; otherwise an import hook
runs it right after each of them is first imported, whichever way the user reaches them
(`from transformers import AutoModel`, `pipeline(...)`, `AutoTokenizer`...).

This module imports only the standard library.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

CONFIGURATION_AUTO = "transformers.models.auto.configuration_auto"
MODELING_AUTO = "transformers.models.auto.modeling_auto"
CONFIGURATION_GPT1 = "gpt1.model.configuration_gpt1"
MODELING_GPT1 = "gpt1.model.modeling_gpt1"

# Each registration needs one transformers module and one of ours, both fully loaded: running it
# while either is still executing (transformers imports its Auto classes from inside the imports
# of modeling_gpt1, and the other way round) would meet a half-built module.
NEEDS = {"config": (CONFIGURATION_AUTO, CONFIGURATION_GPT1), "models": (MODELING_AUTO, MODELING_GPT1)}

# The Auto class for each gpt1 class, by name in `transformers`, and the gpt1 class it gets.
AUTO_MODEL_CLASSES = {
    "AutoModel": "GPT1Model",
    "AutoModelForCausalLM": "GPT1ForCausalLM",
    "AutoModelForSequenceClassification": "GPT1ForSequenceClassification",
    "AutoModelForMultipleChoice": "GPT1ForMultipleChoice",
    "AutoModelForTokenClassification": "GPT1ForTokenClassification",
    "AutoModelForQuestionAnswering": "GPT1ForQuestionAnswering",
}

_loaded: set[str] = set()  # watched modules whose code has finished running
_registered: set[str] = set()


def register_config() -> None:
    """`AutoConfig` (and so `AutoTokenizer`, which reads config.json first) knows model_type "gpt1"."""
    from transformers.models.auto.configuration_auto import AutoConfig

    from .model.configuration_gpt1 import GPT1Config

    AutoConfig.register(GPT1Config.model_type, GPT1Config, exist_ok=True)


def register_models() -> None:
    """Each `AutoModel*` class builds the matching gpt1 class for a gpt1 config."""
    from transformers.models.auto import modeling_auto

    from .model import configuration_gpt1, modeling_gpt1

    for auto_name, model_name in AUTO_MODEL_CLASSES.items():
        auto_class = getattr(modeling_auto, auto_name)
        auto_class.register(configuration_gpt1.GPT1Config, getattr(modeling_gpt1, model_name), exist_ok=True)


REGISTER = {"config": register_config, "models": register_models}


def _register_what_is_ready() -> None:
    for name, (theirs, ours) in NEEDS.items():
        if name in _registered or theirs not in _loaded:
            continue
        if ours in _loaded:
            _registered.add(name)
            _warn_if_failed(REGISTER[name])
        elif ours not in sys.modules:
            # transformers is ready and our module was never imported: import it; its hook then registers.
            _warn_if_failed(functools.partial(importlib.import_module, ours))
        # else ours is executing right now, and registers when it finishes.


def _warn_if_failed(action: Callable[[], object]) -> None:
    # A failure here must not break the user's `import transformers`: say what went wrong instead.
    try:
        action()
    except Exception as error:  # any failure: reported, not raised
        warnings.warn(
            f"gpt1 could not register its classes with transformers' Auto classes ({type(error).__name__}: "
            f"{error}); load gpt1 folders with trust_remote_code=True instead.",
            stacklevel=2,
        )


class _RunAfterExec(importlib.abc.Loader):
    """A loader that runs the real one, then registers whatever that completes."""

    def __init__(self, loader: Any, module_name: str) -> None:
        self._loader = loader
        self._module_name = module_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _loaded.add(self._module_name)
        _register_what_is_ready()

    def __getattr__(self, name: str) -> Any:
        # get_source, get_filename, get_resource_reader...: whatever the real loader offers.
        return getattr(self._loader, name)


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for the modules it watches, it wraps the spec the other finders return."""

    def __init__(self, module_names: set[str]) -> None:
        self._module_names = module_names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._module_names:
            return None
        self._module_names.discard(fullname)
        # It stays in sys.meta_path once done: removing it here would make importlib, which is
        # iterating that list, skip the next finder.
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RunAfterExec(spec.loader, fullname)
                return spec
        return None


def register_when_transformers_loads() -> None:
    """Register what is loaded already, and hook the modules that are not."""
    watched = {module for modules in NEEDS.values() for module in modules}
    for module_name in watched:
        module = sys.modules.get(module_name)
        # `_initializing` is how importlib itself tells a module still executing from a finished one.
        if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
            _loaded.add(module_name)
    pending = watched - _loaded - set(sys.modules)
    if pending and not any(isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport(pending))
    _register_what_is_ready()
