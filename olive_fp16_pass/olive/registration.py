"""Make `olive run` find our pass types.

Olive 0.13 resolves a pass `type` only through its package config (`olive/olive_config.json`); there are no
entry points, and `--package-config FILE` replaces that config instead of extending it. Two routes:

1. Automatic (default): the installed `olive_fp16_pass_autoregister.pth` file imports
   `olive_fp16_pass.olive.import_hook` at interpreter start; the hook waits until `olive.package_config` is
   imported and then calls `patch_package_config`, which makes every `OlivePackageConfig` fall back to our
   entries for pass types it does not know. Olive's built-in passes are untouched, so a workflow can mix them
   with ours freely. Set OLIVE_FP16_NO_AUTOREGISTER=1 to turn it off.
2. Official: `olive-fp16 package-config -o FILE` writes Olive's own package config plus our entries, for
   `olive run --package-config FILE`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

OUR_PASSES: dict[str, dict[str, Any]] = {
    "OnnxFloat16": {
        "module_path": "olive_fp16_pass.olive.float16_pass.OnnxFloat16",
        "supported_providers": ["CPUExecutionProvider", "CUDAExecutionProvider"],
        "supported_accelerators": ["cpu", "gpu"],
        "supported_precisions": ["fp16"],
        "supported_algorithms": [],
        "supported_quantization_encodings": [],
        "dataset": "dataset_optional",  # calibrated Float16 with a data_config
    },
    "OnnxAutoMixedPrecision": {
        "module_path": "olive_fp16_pass.olive.mixed_precision_pass.OnnxAutoMixedPrecision",
        "supported_providers": ["CPUExecutionProvider", "CUDAExecutionProvider"],
        "supported_accelerators": ["cpu", "gpu"],
        "supported_precisions": ["fp16"],
        "supported_algorithms": [],
        "supported_quantization_encodings": [],
        "dataset": "dataset_required",
    },
}

_PATCHED_FLAG = "_olive_fp16_patched"


def package_config_entries() -> dict[str, dict[str, Any]]:
    return copy.deepcopy(OUR_PASSES)


def patch_package_config(config_cls: type) -> bool:
    """Teach `OlivePackageConfig` our pass types; idempotent. Returns True if it patched now."""
    if getattr(config_cls, _PATCHED_FLAG, False):
        return False
    from olive.passes import PassModuleConfig

    ours = {name.lower(): PassModuleConfig(**entry) for name, entry in OUR_PASSES.items()}
    original_get = config_cls.get_pass_module_config
    original_load = config_cls.load_default_config

    def get_pass_module_config(self, pass_type: str):
        try:
            return original_get(self, pass_type)
        except ValueError:
            key = pass_type.rsplit(".", 1)[-1].lower()
            if key not in ours:
                raise
            self.passes[key] = ours[key]
            return ours[key]

    def load_default_config():
        config = original_load()
        for key, entry in ours.items():
            config.passes.setdefault(key, entry)
        return config

    config_cls.get_pass_module_config = get_pass_module_config
    config_cls.load_default_config = staticmethod(load_default_config)
    setattr(config_cls, _PATCHED_FLAG, True)
    return True


def on_package_config_loaded(module) -> None:
    """Import hook: `olive.package_config` has just executed."""
    patch_package_config(module.OlivePackageConfig)


def on_run_config_loaded(module) -> None:
    """Import hook: `olive.workflows.run.config` has just executed; Olive's config models now exist."""
    from olive_fp16_pass.olive import compat

    compat.apply()
    compat.apply_evaluation_cache_key()


def register() -> None:
    """Patch Olive now (for scripts that call `olive.workflows.run` without the auto-registration hook)."""
    from olive.package_config import OlivePackageConfig

    from olive_fp16_pass.olive import compat

    patch_package_config(OlivePackageConfig)
    compat.apply()
    compat.apply_evaluation_cache_key()


def merged_package_config() -> dict[str, Any]:
    """Olive's built-in package config plus our passes: the file for `olive run --package-config`."""
    import olive

    data = json.loads((Path(olive.__file__).parent / "olive_config.json").read_text())
    for name, entry in OUR_PASSES.items():
        data["passes"][name] = copy.deepcopy(entry)
    return data


def write_package_config(path: str | Path) -> Path:
    """Written atomically; an unwritable target is one Float16Error naming it (`olive-fp16 package-config -o`)."""
    from olive_fp16_pass.model_io import write_text

    return write_text(path, json.dumps(merged_package_config(), indent=2) + "\n", "package-config -o")
