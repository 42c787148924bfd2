"""Run at interpreter start by `olive_fp16_pass_autoregister.pth`: hooks into Olive once Olive loads.

It must cost next to nothing for processes that never import Olive, so it only installs a meta-path finder
and imports nothing heavy (no importlib.abc, no typing: ~1 ms). When one of the target Olive modules is
imported, the finder wraps its loader so that, right after the module executes, our callback runs:
- `olive.package_config`: register our pass types (olive_fp16_pass.olive.registration);
- `olive.workflows.run.config`: apply the Olive-bug workarounds (olive_fp16_pass.olive.compat), which need
  Olive's config models to exist; doing it earlier would import Olive half-initialised.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import warnings

TARGETS = {
    "olive.package_config": "on_package_config_loaded",
    "olive.workflows.run.config": "on_run_config_loaded",
}


def _callback(fullname: str, module) -> None:
    try:
        from olive_fp16_pass.olive import registration

        getattr(registration, TARGETS[fullname])(module)
    except Exception as exc:  # never break Olive itself; say what will be missing
        warnings.warn(f"olive-fp16: hook for {fullname} failed ({type(exc).__name__}: {exc})", stacklevel=2)


class _PatchingLoader:
    """Loader protocol by duck typing: importing importlib.abc would double this hook's start-up cost."""

    def __init__(self, inner, fullname: str) -> None:
        self._inner = inner
        self._fullname = fullname

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        self._inner.exec_module(module)
        _callback(self._fullname, module)


class _OliveFinder:
    def find_spec(self, fullname, path, target=None):
        if fullname not in TARGETS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader, fullname)
        return spec


def install() -> None:
    if os.environ.get("OLIVE_FP16_NO_AUTOREGISTER"):
        return
    if not any(isinstance(finder, _OliveFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OliveFinder())
    for fullname in TARGETS:  # hook imported after Olive (e.g. `import olive_fp16_pass.olive` late)
        if fullname in sys.modules:
            _callback(fullname, sys.modules[fullname])


install()
