"""The plugin host: one pluggy PluginManager, built-ins first, then installed plugins.

A plugin that fails to import, register or answer a registration hook is recorded as a
:class:`PluginFailure` under its name and left out; the host and every other plugin go on.

Environment controls (read when the host is built):

- ``SELECTKIT_LOAD_PLUGINS=a,b``: load only these entry-point plugins (empty: none).
- ``SELECTKIT_BLOCK_PLUGINS=a,b``: never load these plugins (entry points or built-ins).
- ``SELECTKIT_TRACE=1``: print every hook call and result to stderr.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from selectkit import hookspecs
from selectkit.errors import ParamError, PluginError

ENTRY_POINT_GROUP = "selectkit"

BUILTIN_PLUGINS = (
    "selectkit.data.readers",
    "selectkit.data.shapes",
    "selectkit.data.tokenizers",
    "selectkit.solvers.builtin",
    "selectkit.features.projectors",
    "selectkit.models.loading",
)


@dataclass
class PluginInfo:
    """One loaded plugin and what it provides."""

    name: str
    distribution: str | None
    version: str | None
    builtin: bool
    provides: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that was left out, and why."""

    name: str
    distribution: str | None
    version: str | None
    stage: str
    error: str


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


class Host:
    """Loads plugins and answers which methods, solvers, formats, shapes and projectors exist."""

    def __init__(
        self,
        *,
        builtins: Iterable[str] = BUILTIN_PLUGINS,
        entry_points: bool = True,
        only: set[str] | None = None,
        blocked: set[str] | None = None,
        trace: bool = False,
    ) -> None:
        self.pm = pluggy.PluginManager("selectkit")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self._blocked = blocked or set()
        self._registries: dict[str, dict[str, type]] = {}
        if trace:
            self.pm.trace.root.setwriter(lambda text: sys.stderr.write(text))
            self.pm.enable_tracing()
        for module_name in builtins:
            short = module_name.rsplit(".", 1)[-1]
            if short in self._blocked or module_name in self._blocked:
                continue
            self._register(
                module_name, lambda m=module_name: importlib.import_module(m), None, True
            )
        if entry_points:
            self._load_entry_points(only)
        self._check_pending()

    @classmethod
    def from_env(cls) -> Host:
        return cls(
            only=_env_list("SELECTKIT_LOAD_PLUGINS"),
            blocked=_env_list("SELECTKIT_BLOCK_PLUGINS"),
            trace=os.environ.get("SELECTKIT_TRACE", "") not in ("", "0"),
        )

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def register(self, plugin: object, name: str) -> None:
        """Register an in-process plugin object (tests, notebooks). Raises on a bad plugin."""
        self.pm.register(plugin, name=name)
        self.pm.check_pending()
        self.plugins[name] = PluginInfo(name, None, None, builtin=False)
        self._registries.clear()

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.plugins.pop(name, None)
        self._registries.clear()

    # -- what the plugins provide -------------------------------------------------------

    @property
    def methods(self) -> dict[str, type]:
        return self._registry("methods")

    @property
    def solvers(self) -> dict[str, type]:
        return self._registry("solvers")

    @property
    def formats(self) -> dict[str, type]:
        return self._registry("formats")

    @property
    def shapes(self) -> dict[str, type]:
        return self._registry("shapes")

    @property
    def projectors(self) -> dict[str, type]:
        return self._registry("projectors")

    def method(self, name: str) -> type:
        return self._lookup("methods", name, "method")

    def solver(self, name: str) -> type:
        return self._lookup("solvers", name, "solver")

    def projector(self, name: str) -> type:
        return self._lookup("projectors", name, "projector")

    def _lookup(self, kind: str, name: str, label: str) -> type:
        registry = self._registry(kind)
        if name not in registry:
            known = ", ".join(sorted(registry)) or "none"
            failed = [f.name for f in self.failures]
            hint = f" (plugins that failed to load: {', '.join(failed)})" if failed else ""
            raise ParamError(f"no {label} named '{name}'; available: {known}{hint}")
        return registry[name]

    def _registry(self, kind: str) -> dict[str, type]:
        if kind not in self._registries:
            self._registries[kind] = self._collect(kind)
        return self._registries[kind]

    def _collect(self, kind: str) -> dict[str, type]:
        """Call ``selectkit_register_<kind>`` on each plugin on its own, so that one plugin
        raising or returning junk is reported and the others still count."""
        caller = getattr(self.pm.hook, f"selectkit_register_{kind}")
        found: dict[str, type] = {}
        for info in self.plugins.values():
            info.provides.pop(kind, None)
        # get_hookimpls() lists plugins in registration order: built-ins, then entry points.
        for impl in caller.get_hookimpls():
            plugin_name = impl.plugin_name
            try:
                classes = list(impl.function() or [])
                for cls in classes:
                    name = getattr(cls, "name", None)
                    if not isinstance(cls, type) or not isinstance(name, str) or not name:
                        raise PluginError(f"returned {cls!r}, which is not a class with a name")
            except Exception as exc:  # a broken plugin must not take the host down
                self.record_failure(plugin_name, f"selectkit_register_{kind}", exc)
                continue
            for cls in classes:
                if cls.name in found and found[cls.name] is not cls:
                    self.record_failure(
                        plugin_name,
                        f"selectkit_register_{kind}",
                        PluginError(f"{kind[:-1]} name '{cls.name}' is already taken"),
                    )
                    continue
                found[cls.name] = cls
                info = self.plugins.get(plugin_name)
                if info is not None:
                    info.provides.setdefault(kind, []).append(cls.name)
        return found

    def warm(self) -> None:
        """Collect every registry now, so listings show what each plugin provides."""
        for kind in ("methods", "solvers", "formats", "shapes", "projectors"):
            self._registry(kind)

    # -- loading ------------------------------------------------------------------------

    def _load_entry_points(self, only: set[str] | None) -> None:
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in self._blocked or (only is not None and ep.name not in only):
                continue
            if self.pm.has_plugin(ep.name):
                continue
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            self._register(ep.name, ep.load, (dist_name, version), False)

    def _register(
        self,
        name: str,
        load: Callable[[], object],
        dist: tuple[str | None, str | None] | None,
        builtin: bool,
    ) -> None:
        dist_name, version = dist or (None, None)
        if builtin:
            from selectkit import __version__

            dist_name, version = "selectkit", __version__
        try:
            plugin = load()
        except Exception as exc:
            self.failures.append(PluginFailure(name, dist_name, version, "import", _describe(exc)))
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            self.failures.append(
                PluginFailure(name, dist_name, version, "register", _describe(exc))
            )
            return
        self.plugins[name] = PluginInfo(name, dist_name, version, builtin)

    def _check_pending(self) -> None:
        """``check_pending`` until clean, dropping each plugin that implements unknown hooks."""
        while True:
            try:
                self.pm.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.pm.get_name(exc.plugin)
                self.pm.unregister(exc.plugin)
                info = self.plugins.pop(name, None)
                self.failures.append(
                    PluginFailure(
                        name,
                        info.distribution if info else None,
                        info.version if info else None,
                        "validate",
                        str(exc),
                    )
                )

    def record_failure(self, plugin_name: str, stage: str, exc: BaseException) -> None:
        info = self.plugins.get(plugin_name)
        self.failures.append(
            PluginFailure(
                plugin_name,
                info.distribution if info else None,
                info.version if info else None,
                stage,
                _describe(exc),
            )
        )


def _describe(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


_HOST: Host | None = None


def get_host() -> Host:
    """The process-wide host, built from the environment on first use."""
    global _HOST
    if _HOST is None:
        _HOST = Host.from_env()
    return _HOST


def reset_host() -> None:
    """Forget the process-wide host (tests, or after installing a plugin at run time)."""
    global _HOST
    _HOST = None
