"""Runtime workarounds for olive-ai bugs that break custom metrics and joint search.

Nothing is patched when this module is imported: call :func:`apply` (idempotent) once, before building Olive
configs or calling ``olive.workflows.run``. Each workaround is applied only when a small live probe shows the bug is
really there, so it becomes a no-op as soon as upstream fixes it. The decision never rests on the version string:
Olive's main branch reports ``0.11.0.dev0`` and still has B1 and B2, so a guard keyed on "0.13" would miss it. A fix
that no longer fits a changed Olive (it raises) is skipped with a warning. :func:`detect` runs the probes without
patching anything.

Bugs (all reproduced with olive-ai 0.13.0 and pydantic 2.13.5):

B1_custom_metric_serialization
    ``olive.evaluator.metric.Metric.serialize_backend`` and ``SubMetric.serialize_metric_config`` (pydantic field
    serializers) call ``.model_dump()`` on ``None``. A ``"type": "custom"`` metric always has ``backend=None``
    (``Metric.validate_backend`` forces it) and its sub-types have ``metric_config=None``, so *any* dump of a config
    holding a custom metric raises ``PydanticSerializationError: Error calling function `serialize_backend`:
    AttributeError: 'NoneType' object has no attribute 'model_dump'``. Users see it from ``RunConfig.to_json()``
    (``olive.workflows.run`` -> ``run_engine`` dies before any pass runs), and already while *parsing* a RunConfig
    whose pass has its own custom-metric evaluator (``RunConfig.validate_pass_search`` dumps the pass config).
    Fix: None-safe replacements for both serializer functions, then rebuild the models that embed them.

B2_metric_user_config
    ``Metric.user_config`` is declared ``Optional[ConfigBase]``; pydantic serializes a field by its declared type, and
    ``ConfigBase`` has no fields, so ``Metric.model_dump()`` writes ``"user_config": {}``: ``user_script``,
    ``evaluate_func``, ``metric_func``, ``io_bind``, ``inference_settings`` ... are silently dropped (hidden behind B1
    until that is fixed). Where it bites in a real run: ``RunEngineConfig.create_engine``
    (olive/workflows/run/config.py) passes ``self.model_dump(...)`` to ``Engine``, which re-validates the evaluator
    from that dict, so the custom metric has no ``evaluate_func`` and ``olive.workflows.run`` raises ``ValueError:
    evaluate_func or metric_func is not specified in the metric config`` (inside a search Olive catches it and logs
    the search point as FAILED). The same loss happens for per-pass evaluators in ``RunConfig.validate_pass_search``
    and ``Engine._compute_search_pass_configs``, and in the config cached by ``cache_olive_config`` (``to_json()``).
    Fix: mark the field ``SerializeAsAny`` (serialize by runtime type) and rebuild the models that embed ``Metric``.

B3_footprint_model_config_alias
    ``olive.engine.footprint.FootprintNode.update`` does ``setattr(self, k, v)`` with the keyword ``model_config``,
    which is the *alias* of the field ``model_config_data`` (``model_config`` is pydantic's class config), so it raises
    ``ValueError: "FootprintNode" object has no field "model_config"``. ``Footprint.record`` calls ``update`` whenever
    the model id is already in the footprint: ``Engine._run_pass`` does that when a joint search reaches a pass
    output it already produced (cache hit). Olive catches the error per search point, so most points of a joint search
    end as ``... FAILED`` warnings and are missing from the results. Fix: map aliases to field names in ``update``.

Versions checked: olive-ai 0.13.0 (all three bugs); Olive's main (2026-08, reports ``0.11.0.dev0``) has B1 and B2.
:data:`AFFECTED_OLIVE_VERSIONS` is informational (:func:`is_affected_version`), not a guard. To check whether a
workaround can be removed with a newer Olive: run
``python -c "from olive_fp16_pass.olive import compat; print(compat.detect())"``; every entry that is ``False`` is
fixed upstream (``tests/test_olive_compat.py`` reproduces each bug without the workaround and will skip those halves).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

logger = logging.getLogger(__name__)

B1_CUSTOM_METRIC_SERIALIZATION = "B1_custom_metric_serialization"
B2_METRIC_USER_CONFIG = "B2_metric_user_config"
B3_FOOTPRINT_MODEL_CONFIG_ALIAS = "B3_footprint_model_config_alias"
WORKAROUNDS: tuple[str, ...] = (
    B1_CUSTOM_METRIC_SERIALIZATION,
    B2_METRIC_USER_CONFIG,
    B3_FOOTPRINT_MODEL_CONFIG_ALIAS,
)

#: ``[low, high)`` range of Olive ``(major, minor)`` versions known to have all three bugs (informational only:
#: :func:`apply` decides by the live probes).
AFFECTED_OLIVE_VERSIONS: tuple[tuple[int, int], tuple[int, int]] = ((0, 13), (0, 14))

_PROBE_FUNC = "olive_fp16_compat_probe_func"

_lock = threading.Lock()
_applied: list[str] = []


def olive_version() -> str:
    """Return the installed ``olive.__version__``."""
    import olive

    return str(olive.__version__)


def is_affected_version(version: str | None = None) -> bool:
    """Whether ``version`` (default: installed Olive) is in :data:`AFFECTED_OLIVE_VERSIONS`."""
    match = re.match(r"\s*v?(\d+)\.(\d+)", version if version is not None else olive_version())
    if match is None:
        return False
    major_minor = (int(match.group(1)), int(match.group(2)))
    low, high = AFFECTED_OLIVE_VERSIONS
    return low <= major_minor < high


# ---------------------------------------------------------------------------------------------------------------------
# probes: each returns True when the bug is present in the running process
# ---------------------------------------------------------------------------------------------------------------------


def _probe_custom_metric() -> Any:
    from olive.evaluator.metric import Metric

    return Metric.model_validate(
        {
            "name": "olive_fp16_compat_probe",
            "type": "custom",
            "sub_types": [{"name": "value", "priority": 1, "higher_is_better": True}],
            # user_script is only checked for being set, never loaded
            "user_config": {"user_script": "olive_fp16_compat_probe.py", "evaluate_func": _PROBE_FUNC},
        }
    )


def _b1_present() -> bool:
    """B1: dumping a custom metric (directly and nested in an evaluator config) raises."""
    from olive.evaluator.olive_evaluator import OliveEvaluatorConfig

    metric = _probe_custom_metric()
    try:
        metric.model_dump()
        OliveEvaluatorConfig(metrics=[metric]).model_dump()
    except Exception as exc:
        if "model_dump" in str(exc):
            return True
        raise
    return False


def _b2_present() -> bool:
    """B2: ``user_config`` fields are lost when a metric is dumped (directly or nested in an evaluator config)."""
    from olive.evaluator.olive_evaluator import OliveEvaluatorConfig

    metric = _probe_custom_metric()
    # exclude the fields that trip over B1 so this probe is independent of it
    dumps = (
        metric.model_dump(include={"user_config"}),
        OliveEvaluatorConfig(metrics=[metric]).model_dump(include={"metrics": {0: {"user_config"}}})["metrics"][0],
    )
    return any((dump.get("user_config") or {}).get("evaluate_func") != _PROBE_FUNC for dump in dumps)


def _b3_present() -> bool:
    """B3: ``FootprintNode.update(model_config=...)`` raises or does not set ``model_config_data``."""
    from olive.engine.footprint import FootprintNode

    node = FootprintNode(model_id="olive_fp16_compat_probe")
    try:
        node.update(model_config={"probe": 1})
    except ValueError:
        return True
    return node.model_config_data != {"probe": 1}


_PROBES: dict[str, Callable[[], bool]] = {
    B1_CUSTOM_METRIC_SERIALIZATION: _b1_present,
    B2_METRIC_USER_CONFIG: _b2_present,
    B3_FOOTPRINT_MODEL_CONFIG_ALIAS: _b3_present,
}


def _probe(name: str) -> bool:
    """A probe that cannot even run (an Olive whose classes moved) finds no bug we know how to fix."""
    try:
        return _PROBES[name]()
    except Exception as exc:
        logger.warning("olive compat probe %s failed on olive %s: %s", name, olive_version(), exc)
        return False


def detect() -> dict[str, bool]:
    """Probe the running Olive for each bug (``True`` = present). Patches nothing; ignores the version guard."""
    return {name: probe() for name, probe in _PROBES.items()}


# ---------------------------------------------------------------------------------------------------------------------
# fixes
# ---------------------------------------------------------------------------------------------------------------------


def _serialize_backend(self: Any, backend: Any) -> Any:
    """Replacement for ``Metric.serialize_backend``: custom metrics have ``backend=None`` (B1)."""
    if backend is None or isinstance(backend, str):
        return backend
    return backend.model_dump()


def _serialize_metric_config(self: Any, metric_config: Any) -> Any:
    """Replacement for ``SubMetric.serialize_metric_config``: custom sub-metrics have ``metric_config=None`` (B1)."""
    return None if metric_config is None else metric_config.model_dump()


def _replace_field_serializer(model: type[Any], name: str, func: Callable[..., Any]) -> None:
    """Swap the function behind the pydantic ``@field_serializer`` method ``model.name`` (takes effect on rebuild)."""
    decorators = model.__pydantic_decorators__
    old = decorators.field_serializers[name]
    func.__name__ = func.__qualname__ = name
    decorators.field_serializers[name] = dataclasses.replace(old, func=func)
    setattr(model, name, func)


def _fix_b1() -> list[type[Any]]:
    from olive.evaluator.metric import Metric, SubMetric

    _replace_field_serializer(Metric, "serialize_backend", _serialize_backend)
    _replace_field_serializer(SubMetric, "serialize_metric_config", _serialize_metric_config)
    return [SubMetric, Metric]


def _fix_b2() -> list[type[Any]]:
    from olive.evaluator.metric import Metric
    from pydantic import SerializeAsAny

    fields = Metric.__pydantic_fields__
    field = copy.copy(fields["user_config"])
    field.metadata = [*field.metadata, SerializeAsAny()]
    fields["user_config"] = field
    return [Metric]


def _footprint_node_update(self: Any, **kwargs: Any) -> None:
    """Replacement for ``FootprintNode.update`` that accepts field aliases such as ``model_config`` (B3)."""
    alias_to_name = {info.alias: name for name, info in type(self).model_fields.items() if info.alias}
    for key, value in kwargs.items():
        setattr(self, alias_to_name.get(key, key), value)


def _fix_b3() -> list[type[Any]]:
    from olive.engine.footprint import FootprintNode

    _footprint_node_update.__qualname__ = "FootprintNode.update"
    FootprintNode.update = _footprint_node_update  # type: ignore[method-assign]
    return []  # plain method: no schema to rebuild


_FIXES: dict[str, Callable[[], list[type[Any]]]] = {
    B1_CUSTOM_METRIC_SERIALIZATION: _fix_b1,
    B2_METRIC_USER_CONFIG: _fix_b2,
    B3_FOOTPRINT_MODEL_CONFIG_ALIAS: _fix_b3,
}


# ---------------------------------------------------------------------------------------------------------------------
# schema rebuild: pydantic compiles a copy of a nested model's (de)serializer into every model that contains it, so
# after changing Metric/SubMetric we must rebuild them *and* every already-built model that embeds them
# (OliveEvaluatorConfig, RunEngineConfig, RunPassConfig, RunConfig, ...), children before parents.
# ---------------------------------------------------------------------------------------------------------------------


def _all_model_classes() -> Iterator[type[Any]]:
    from pydantic import BaseModel

    seen: set[type[Any]] = set()
    stack: list[type[Any]] = [BaseModel]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
                yield sub


def _models_in_schema(schema: Any, candidates: set[type[Any]]) -> set[type[Any]]:
    """Return the classes from ``candidates`` that occur as ``{"type": "model", "cls": ...}`` anywhere in ``schema``."""
    found: set[type[Any]] = set()
    visited: set[int] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, dict):
            cls = node.get("cls")
            if node.get("type") == "model" and isinstance(cls, type) and cls in candidates:
                found.add(cls)
            stack.extend(value for value in node.values() if isinstance(value, (dict, list, tuple)))
        elif isinstance(node, (list, tuple)):
            stack.extend(value for value in node if isinstance(value, (dict, list, tuple)))
    return found


def _rebuild(model: type[Any]) -> None:
    """Force-rebuild ``model``; on failure restore its previous schema/validator/serializer and re-raise."""
    attrs = ("__pydantic_core_schema__", "__pydantic_validator__", "__pydantic_serializer__", "__pydantic_complete__")
    saved = {attr: model.__dict__[attr] for attr in attrs if attr in model.__dict__}
    try:
        model.model_rebuild(force=True)
    except Exception:
        for attr, value in saved.items():
            setattr(model, attr, value)
        raise


def _rebuild_with_dependents(roots: list[type[Any]]) -> list[type[Any]]:
    root_set = set(roots)
    dependents: dict[type[Any], set[type[Any]]] = {}
    for cls in _all_model_classes():
        schema = cls.__dict__.get("__pydantic_core_schema__")
        if cls in root_set or not cls.__dict__.get("__pydantic_complete__") or not isinstance(schema, dict):
            continue
        if _models_in_schema(schema, root_set):
            dependents[cls] = set()
    candidates = set(dependents)
    for cls in dependents:
        dependents[cls] = _models_in_schema(cls.__dict__["__pydantic_core_schema__"], candidates) - {cls}
    # a nested model's schema is inlined in its parents, so a parent always contains strictly more candidates
    order = [*roots, *sorted(dependents, key=lambda cls: (len(dependents[cls]), cls.__module__, cls.__qualname__))]
    for cls in order:
        _rebuild(cls)
    return order


# ---------------------------------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------------------------------


def apply(workarounds: Iterable[str] | None = None) -> list[str]:
    """Apply the workarounds the installed Olive needs; return the names of all workarounds applied so far.

    ``workarounds`` restricts this call to a subset of :data:`WORKAROUNDS` (default: all of them).
    Idempotent and thread-safe. Whatever the version string says, a workaround is applied exactly when its live
    probe finds the bug, and skipped when it does not (fixed upstream). A workaround that raises while being applied
    (Olive's internals changed) or does not cure its probe is not reported and logs a warning.
    """
    wanted = WORKAROUNDS if workarounds is None else tuple(workarounds)
    unknown = sorted(set(wanted) - set(WORKAROUNDS))
    if unknown:
        raise ValueError(f"unknown olive compat workarounds {unknown}; known: {list(WORKAROUNDS)}")
    with _lock:
        pending = [name for name in WORKAROUNDS if name in wanted and name not in _applied and _probe(name)]
        if not pending:
            return list(_applied)
        if not is_affected_version():
            logger.info("olive %s: the probes find %s; applying the workarounds", olive_version(), pending)
        roots: list[type[Any]] = []
        for name in list(pending):
            try:
                fixed = _FIXES[name]()
            except Exception as exc:  # a fix written against 0.13's internals may not fit another Olive
                logger.warning(
                    "olive compat workaround %s cannot be applied to olive %s: %s", name, olive_version(), exc
                )
                pending.remove(name)
                continue
            roots.extend(cls for cls in fixed if cls not in roots)
        if roots:
            rebuilt = _rebuild_with_dependents(roots)
            logger.debug("rebuilt pydantic models: %s", [cls.__qualname__ for cls in rebuilt])
        for name in pending:
            if _probe(name):
                logger.warning("olive compat workaround %s did not fix the bug (olive %s)", name, olive_version())
            else:
                _applied.append(name)
                logger.info("applied olive compat workaround %s (olive %s)", name, olive_version())
        return list(_applied)


def applied() -> list[str]:
    """Return the names of the workarounds applied in this process (in application order)."""
    with _lock:
        return list(_applied)


# ---------------------------------------------------------------------------------------------------------------------
# B4: the evaluation cache ignores the evaluator (separate from apply(): its own probe, applied by the import hook)
# ---------------------------------------------------------------------------------------------------------------------

B4_EVALUATION_CACHE_KEY = "B4_evaluation_cache_key"
"""``Engine._evaluate_model`` (olive-ai 0.13) keys its evaluation cache (``<cache>/evaluations/<id>.json``) on the
model id and the accelerator only, so a rerun with the same ``cache_dir`` after the evaluator changed (a metric's
``evaluate_func_kwargs``, sub-metrics, data, a latency setting) reports the figures of the old evaluator. Fixed
upstream after 0.13 (microsoft/Olive#2552 folds ``hash_dict(evaluator_config.to_json())`` into the key). The
workaround does the same: within ``_evaluate_model`` the keys that ``_load_evaluation`` / ``_cache_evaluation`` see
get a digest of the evaluator config appended; the footprint still records the plain model id.
Mitigation without it: ``"clean_evaluation_cache": true`` in the workflow (or a fresh ``cache_dir``)."""

_b4_original: Callable[..., Any] | None = None


def _evaluator_digest(evaluator_config: Any) -> str:
    """Digest of everything the evaluator does. A config that cannot be dumped falls back to its repr, which
    may hold object addresses: then the cache misses (re-evaluates), never reuses a wrong result."""
    import hashlib
    import json

    try:
        text = json.dumps(evaluator_config.to_json(), sort_keys=True, default=str)
    except Exception:
        text = repr(evaluator_config)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _CacheKeyProbe:
    """Stands in for an Engine in :func:`evaluation_cache_ignores_evaluator`: records the cache keys asked for and
    answers as a cache hit, so Olive's real ``_evaluate_model`` returns before touching any model."""

    def __init__(self) -> None:
        import types

        self.keys: list[str] = []
        self.footprint = types.SimpleNamespace(record=lambda **_: None)

    def _load_evaluation(self, key: str) -> Any:
        from olive.evaluator.metric_result import MetricResult

        self.keys.append(key)
        return MetricResult.model_validate({})

    def _cache_evaluation(self, key: str, signal: Any) -> None:  # pragma: no cover - a hit never caches
        self.keys.append(key)


def evaluation_cache_ignores_evaluator() -> bool:
    """Live probe: does Olive's ``Engine._evaluate_model`` look up the same cache entry for two different
    evaluators of the same model? (Olive's own function, two real evaluator configs.)"""
    from olive.engine.engine import Engine
    from olive.evaluator.olive_evaluator import OliveEvaluatorConfig

    probe = _CacheKeyProbe()
    for sub_type in ("avg", "p50"):
        config = OliveEvaluatorConfig.parse_obj(
            {"metrics": [{"name": "latency", "type": "latency", "sub_types": [{"name": sub_type}]}]}
        )
        Engine._evaluate_model(probe, None, "probe-model", config, None)
    return len(probe.keys) == 2 and probe.keys[0] == probe.keys[1]


def apply_evaluation_cache_key() -> bool:
    """Key Olive's evaluation cache on the evaluator too, where the probe finds it missing. Idempotent; returns
    whether the workaround is in place."""
    global _b4_original
    from olive.engine.engine import Engine

    with _lock:
        if _b4_original is not None:
            return True
        if not evaluation_cache_ignores_evaluator():
            return False
        original = Engine._evaluate_model

        def _evaluate_model(self, model_config, model_id, evaluator_config, accelerator_spec):
            suffix = f"-eval{_evaluator_digest(evaluator_config)}"
            load, cache = self._load_evaluation, self._cache_evaluation
            self._load_evaluation = lambda key: load(f"{key}{suffix}")
            self._cache_evaluation = lambda key, signal: cache(f"{key}{suffix}", signal)
            try:
                return original(self, model_config, model_id, evaluator_config, accelerator_spec)
            finally:
                del self._load_evaluation, self._cache_evaluation

        Engine._evaluate_model = _evaluate_model
        _b4_original = original
        if evaluation_cache_ignores_evaluator():
            Engine._evaluate_model, _b4_original = original, None
            logger.warning(
                "olive compat workaround %s did not fix the bug (olive %s)", B4_EVALUATION_CACHE_KEY, olive_version()
            )
            return False
        _applied.append(B4_EVALUATION_CACHE_KEY)
        logger.info("applied olive compat workaround %s (olive %s)", B4_EVALUATION_CACHE_KEY, olive_version())
        return True
