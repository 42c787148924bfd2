"""Run at interpreter start by `olive_fp16_pass_autoregister.pth`: registers our passes once Olive loads.

It must cost next to nothing for processes that never import Olive, so it only installs a meta-path finder
and imports nothing heavy. When `olive.package_config` is imported, the finder wraps its loader so that, right
after the module executes, `registration.patch_package_config` teaches it our pass types.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import warnings

TARGET = "olive.package_config"


class _PatchingLoader:
    """Loader protocol by duck typing: importing importlib.abc would double this hook's start-up cost."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        self._inner.exec_module(module)
        try:
            from olive_fp16_pass.olive.registration import patch_package_config

            patch_package_config(module.OlivePackageConfig)
        except Exception as exc:  # never break Olive itself; say why our passes will be missing
            warnings.warn(f"olive-fp16: could not register passes with Olive ({exc})", stacklevel=1)


class _OliveFinder:
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader)
        return spec


def install() -> None:
    if os.environ.get("OLIVE_FP16_NO_AUTOREGISTER"):
        return
    if TARGET in sys.modules:  # Olive already loaded (hook imported late): patch directly
        from olive_fp16_pass.olive.registration import patch_package_config

        patch_package_config(sys.modules[TARGET].OlivePackageConfig)
        return
    if not any(isinstance(finder, _OliveFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OliveFinder())


install()
