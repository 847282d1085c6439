"""The plugin host: one pluggy PluginManager, built-ins first, then installed plugins.

A plugin that fails to import, register or answer a registration hook is recorded as a
:class:`PluginFailure` under its name and left out; the host and every other plugin go on.

Who owns a name (a method, solver, format, shape or projector) — the precedence rule:

- First-party names cannot be taken. First-party is selectkit itself: the built-in modules
  (:data:`BUILTIN_PLUGINS`) and the entry points of the ``selectkit`` distribution (the
  methods in ``plugins/``). Another plugin registering such a name is refused for that name
  and reported as a :class:`NameConflict`; the first-party plugin is not blamed.
- A name that two third-party plugins register (different classes) is refused for both, and
  reported naming both distributions.
- Any registration stays reachable by its qualified name, ``plugin:name`` or
  ``distribution:name`` (``--method selectkit-keyword:keyword``); an unqualified name only
  ever means the one holder, so installing a plugin never changes what a name runs.
- Entry-point names follow the same rule: the ``selectkit`` distribution's come first, and a
  name two third-party distributions use is refused for both.

Environment controls (read by :meth:`Host.from_env`; names that match nothing are warnings):

- ``SELECTKIT_LOAD_PLUGINS=a,b``: load only these installed plugins, named by entry point or by
  distribution (set but empty: none, with a warning). Built-in modules always load.
- ``SELECTKIT_BLOCK_PLUGINS=a,b``: never load these: entry-point names, distribution names
  (``selectkit`` blocks its own methods), or built-in modules (``readers`` or
  ``selectkit.data.readers``). Method names are not plugin names: naming one is a warning
  that says which plugin provides it.
- ``SELECTKIT_TRACE=1`` (also true/yes/on): one line on stderr per hook call, registration
  hooks included (one per plugin), arguments and results abbreviated.

Warnings are :class:`PluginWarning`\\ s, kept in :attr:`Host.warnings`; the command line
prints them as ``warning: ...`` lines.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from selectkit import hookspecs
from selectkit.errors import ParamError, PluginError
from selectkit.registry import KINDS, Claim, NameConflict, PluginInfo, Registry, normalize
from selectkit.tracing import trace_line

if TYPE_CHECKING:
    from selectkit.data.formats import LoadOptions
    from selectkit.models.loading import LoadedModel, ModelOptions

ENTRY_POINT_GROUP = "selectkit"
#: The distribution whose entry points are first-party.
FIRST_PARTY = "selectkit"

BUILTIN_PLUGINS = (
    "selectkit.data.readers",
    "selectkit.data.shapes",
    "selectkit.data.tokenizers",
    "selectkit.solvers.builtin",
    "selectkit.compute.projectors",
    "selectkit.models.loading",
)

_YES = ("1", "true", "yes", "on")
_NO = ("0", "false", "no", "off", "")


class PluginWarning(UserWarning):
    """Something about the installed plugins or their environment controls the user should
    fix, which does not stop the run (a filter naming nothing, a refused name)."""


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that was left out, and why."""

    name: str
    distribution: str | None
    version: str | None
    stage: str
    error: str


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
        _labels: tuple[str, str] = ("only", "blocked"),
    ) -> None:
        self.pm = pluggy.PluginManager("selectkit")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.warnings: list[str] = []
        self._load_failures: list[PluginFailure] = []
        self._collect_failures: dict[str, list[PluginFailure]] = {}
        self._extra_conflicts: list[NameConflict] = []
        self._registries: dict[str, Registry] = {}
        self._trace = trace
        self._model: tuple[tuple[str, ModelOptions], LoadedModel] | None = None
        if trace:
            self.pm.add_hookcall_monitoring(lambda *a: None, self._trace_hook)
        blocked = set(blocked or ())
        used: set[str] = set()
        for module_name in builtins:
            short = module_name.rsplit(".", 1)[-1]
            hit = {short, module_name} & blocked
            if hit:
                used |= hit
                continue
            self._register(
                module_name, lambda m=module_name: importlib.import_module(m), None, True
            )
        if entry_points:
            used |= self._load_entry_points(only, blocked, _labels[0])
        self._check_pending()
        if blocked - used:
            self._unmatched_blocked(sorted(blocked - used), _labels[1], builtins)

    @classmethod
    def from_env(cls) -> Host:
        """The host the environment asks for (``SELECTKIT_LOAD_PLUGINS``,
        ``SELECTKIT_BLOCK_PLUGINS``, ``SELECTKIT_TRACE``)."""
        notes: list[str] = []
        trace = env_flag("SELECTKIT_TRACE", notes)
        only = _env_list("SELECTKIT_LOAD_PLUGINS")
        if only is not None and not only:
            notes.append(
                "SELECTKIT_LOAD_PLUGINS is set but empty, so no installed plugin is loaded (not "
                "even selectkit's own methods), only the built-in formats, shapes and solvers; "
                "unset it to load them all"
            )
        host = cls(
            only=only,
            blocked=_env_list("SELECTKIT_BLOCK_PLUGINS"),
            trace=trace,
            _labels=("SELECTKIT_LOAD_PLUGINS", "SELECTKIT_BLOCK_PLUGINS"),
        )
        for note in notes:
            host.warn(note)
        return host

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def first_party_hook(self, name: str) -> Any:
        """Hook ``name`` as answered by first-party plugins only: how the loaders answer the
        names selectkit reserves (``smollm2``, ``tiny-llama``), which no plugin can take."""
        others = [
            plugin
            for plugin_name, plugin in self.pm.list_name_plugin()
            if plugin is not None
            and not (plugin_name in self.plugins and self.plugins[plugin_name].first_party)
        ]
        return self.pm.subset_hook_caller(name, others)

    def register(self, plugin: object, name: str) -> None:
        """Register an in-process plugin object (tests, notebooks); a third-party plugin for
        the precedence rule. Raises :class:`PluginError` on a bad or already loaded plugin."""
        existing = self.plugins.get(name)
        if existing is not None or self.pm.is_registered(plugin):
            holder = existing or self.plugins.get(self.pm.get_name(plugin) or "")
            where = holder.origin() if holder else f"plugin '{name}'"
            raise PluginError(
                f"cannot register plugin '{name}': {where} is already loaded (an installed "
                "plugin is loaded from its entry point); to test a plugin on its own, build "
                "the host without entry points: Host(entry_points=False)"
            )
        self.pm.register(plugin, name=name)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(plugin)
            raise PluginError(f"plugin '{name}' does not fit the hooks: {exc}") from None
        self.plugins[name] = PluginInfo(name, None, None, builtin=False)
        self._forget()

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.plugins.pop(name, None)
        self._forget()

    def warn(self, message: str) -> None:
        """Record ``message`` and issue it as a :class:`PluginWarning`."""
        self.warnings.append(message)
        warnings.warn(message, PluginWarning, stacklevel=2)

    # -- what the plugins provide -------------------------------------------------------

    @property
    def methods(self) -> Registry:
        return self._registry("methods")

    @property
    def solvers(self) -> Registry:
        return self._registry("solvers")

    @property
    def formats(self) -> Registry:
        return self._registry("formats")

    @property
    def shapes(self) -> Registry:
        return self._registry("shapes")

    @property
    def projectors(self) -> Registry:
        return self._registry("projectors")

    def method(self, name: str) -> type:
        """The method class ``name`` means (``name`` or ``plugin:name``)."""
        return self._lookup("methods", name)

    def solver(self, name: str) -> type:
        return self._lookup("solvers", name)

    def projector(self, name: str) -> type:
        return self._lookup("projectors", name)

    def format(self, name: str) -> type:
        return self._lookup("formats", name)

    def shape(self, name: str) -> type:
        return self._lookup("shapes", name)

    # -- the loader hooks (firstresult): a reserved name only first-party plugins answer --

    def load_records(self, source: str, options: LoadOptions) -> Sequence[Any] | None:
        """The rows of ``source`` from the first plugin that reads it; ``None`` when none does."""
        return self.hook.selectkit_load_records(
            source=source, options=options, formats=self.formats
        )

    def load_tokenizer(self, spec: str, *, trust_remote_code: bool = False) -> Any:
        """The tokenizer ``spec`` names; :class:`ParamError` when no plugin knows it."""
        from selectkit.data.tokenizers import is_reserved_tokenizer, unknown_tokenizer

        hook = self._loader("selectkit_load_tokenizer", is_reserved_tokenizer(spec))
        tokenizer = hook(spec=spec, trust_remote_code=trust_remote_code)
        if tokenizer is None:
            raise unknown_tokenizer(spec)
        return tokenizer

    def load_model(self, spec: str, options: ModelOptions | None = None) -> LoadedModel:
        """Model ``spec`` on ``options.device``, in eval mode, with a padding token; a fresh
        copy every call (:meth:`shared_model` keeps one for the methods of a session)."""
        from selectkit.models.loading import (
            ModelOptions,
            is_reserved_model,
            prepared,
            resolve_device,
            unknown_model,
        )

        options = options if options is not None else ModelOptions()
        device = resolve_device(options.device)
        loaded = self._loader("selectkit_load_model", is_reserved_model(spec))(
            spec=spec, options=options
        )
        if loaded is None:
            raise unknown_model(spec)
        return prepared(loaded, device)

    def _loader(self, name: str, reserved: bool) -> Any:
        """Loader hook ``name`` as it is asked: by first-party plugins alone for a name
        selectkit reserves (``smollm2``, ``tiny-llama``), by every plugin otherwise."""
        return self.first_party_hook(name) if reserved else getattr(self.hook, name)

    def shared_model(self, spec: str, options: ModelOptions) -> LoadedModel:
        """Model ``spec``, loaded once and kept for the next method that asks for the same
        model (a notebook or the demo comparing methods). One model at a time: asking for
        another frees this one. Nobody can change it: a :class:`LoadedModel` is frozen, and
        adapters are attached only inside :meth:`LoadedModel.adapted`, which removes them."""
        key = (spec, options)
        if self._model is None or self._model[0] != key:
            self._model = None  # free the last before loading the next
            self._model = (key, self.load_model(spec, options))
        return self._model[1]

    def shared_model_if_loaded(self, spec: str, options: ModelOptions) -> LoadedModel | None:
        """The kept model when it is ``spec`` with ``options``; ``None`` otherwise."""
        if self._model is not None and self._model[0] == (spec, options):
            return self._model[1]
        return None

    def provider(self, kind: str, obj: Any) -> PluginInfo | None:
        """The plugin that registered class ``obj`` of ``kind`` (``"methods"``, ...), or None
        for a class no plugin registered."""
        claim = self._registry(kind).holder_of(obj)
        return claim.plugin if claim is not None else None

    @property
    def failures(self) -> list[PluginFailure]:
        """Plugins left out, and registration hooks that failed (of the registries collected
        so far: :meth:`warm` collects them all)."""
        collected = [f for kind in self._collect_failures.values() for f in kind]
        return [*self._load_failures, *collected]

    @property
    def conflicts(self) -> list[NameConflict]:
        """Every name claimed by more than one plugin, with who keeps it."""
        self.warm()
        found = [c for r in self._registries.values() for c in r.conflicts]
        return [*found, *self._extra_conflicts]

    def record_conflict(self, conflict: NameConflict) -> None:
        """Record a conflict found outside the registries (a plugin's command)."""
        self._extra_conflicts.append(conflict)

    def _lookup(self, kind: str, name: str) -> type:
        registry = self._registry(kind)
        try:
            claim = registry.claim(name)
        except KeyError:
            failed = [f.name for f in self.failures]
            hint = f" (plugins that failed to load: {', '.join(failed)})" if failed else ""
            raise ParamError(registry.explain(name) + hint) from None
        if ":" not in name:
            for conflict in registry.conflicts:
                if conflict.name == name and conflict.holder is not None:
                    self.warn(conflict.message())
        return claim.obj

    def _registry(self, kind: str) -> Registry:
        if kind not in self._registries:
            self._registries[kind] = self._collect(kind)
        return self._registries[kind]

    def _collect(self, kind: str) -> Registry:
        """Call ``selectkit_register_<kind>`` on each plugin on its own, so that one plugin
        raising or returning junk is reported and the others still count."""
        hook_name = f"selectkit_register_{kind}"
        label = KINDS[kind]
        failures: list[PluginFailure] = []
        self._collect_failures[kind] = failures
        claims: dict[str, list[Claim]] = {}
        for info in self.plugins.values():
            info.provides.pop(kind, None)
            info.refused.pop(kind, None)
        for info, result in self.call_each(hook_name, failures=failures):
            try:
                classes = list(result or [])
                for cls in classes:
                    name = getattr(cls, "name", None)
                    if not isinstance(cls, type) or not isinstance(name, str) or not name:
                        raise PluginError(f"returned {cls!r}, which is not a class with a name")
                    if ":" in name:
                        raise PluginError(
                            f"{label} name '{name}' has a ':', which separates a qualifier "
                            "(plugin:name) from a name"
                        )
            except Exception as exc:  # a broken plugin must not take the host down
                failures.append(self._failure(info.name, hook_name, exc))
                continue
            for cls in classes:
                found = claims.setdefault(cls.name, [])
                if not any(c.plugin is info and c.obj is cls for c in found):
                    found.append(Claim(info, cls.name, cls))
        registry = Registry(kind, claims)
        for name, found in claims.items():
            for claim in found:
                held = registry.held.get(name)
                target = claim.plugin.provides
                if held is None or held.obj is not claim.obj:
                    target = claim.plugin.refused
                target.setdefault(kind, []).append(name)
        return registry

    def call_each(
        self, hook_name: str, *, failures: list[PluginFailure] | None = None, **kwargs: Any
    ) -> Iterator[tuple[PluginInfo, Any]]:
        """Call hook ``hook_name`` on each plugin on its own, in registration order, and yield
        ``(plugin, result)``; a plugin that raises is recorded as a failure (in ``failures``,
        else the host's) and skipped. Traced like every other hook call."""
        order = {name: i for i, name in enumerate(self.plugins)}
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        for impl in sorted(impls, key=lambda i: order.get(i.plugin_name, len(order))):
            info = self.plugins.get(impl.plugin_name) or PluginInfo(
                impl.plugin_name, None, None, builtin=False
            )
            sink = self._load_failures if failures is None else failures
            if impl.wrapper or impl.hookwrapper:
                sink.append(
                    self._failure(
                        info.name,
                        hook_name,
                        PluginError("a wrapper cannot implement a registration hook"),
                    )
                )
                continue
            try:
                result = impl.function(*(kwargs[arg] for arg in impl.argnames))
            except Exception as exc:  # a broken plugin must not take the host down
                self._trace_line(f"{hook_name} [{info.name}]", kwargs, error=exc)
                sink.append(self._failure(info.name, hook_name, exc))
                continue
            self._trace_line(f"{hook_name} [{info.name}]", kwargs, result=result)
            yield info, result

    def warm(self) -> None:
        """Collect every registry now, so listings show what each plugin provides."""
        for kind in KINDS:
            self._registry(kind)

    def _forget(self) -> None:
        self._registries.clear()
        self._collect_failures.clear()

    # -- loading ------------------------------------------------------------------------

    def _load_entry_points(self, only: set[str] | None, blocked: set[str], label: str) -> set[str]:
        """Register the entry points the filters let through; return the names of ``blocked``
        that matched one."""
        found = _entry_points()
        matched_block: set[str] = set()
        matched_only: set[str] = set()
        wanted = []
        for ep, dist, version in found:
            hits_block = {name for name in blocked if _names(ep, dist, name)}
            hits_only = {name for name in only or () if _names(ep, dist, name)}
            matched_block |= hits_block
            matched_only |= hits_only
            if not hits_block and (only is None or hits_only):
                wanted.append((ep, dist, version))
        if only and only - matched_only:
            self._unmatched_only(sorted(only - matched_only), label, found)
        self._register_entry_points(wanted)
        return matched_block

    def _register_entry_points(self, found: list[tuple[Any, str | None, str | None]]) -> None:
        """The ``selectkit`` distribution's entry points first, then the others by name; an
        entry-point name used twice goes to the first-party one, or to nobody."""
        groups: dict[str, list[tuple[Any, str | None, str | None]]] = {}
        for item in found:
            groups.setdefault(item[0].name, []).append(item)
        for name in sorted(groups, key=lambda n: (not _first(groups[n]), n)):
            items = groups[name]
            keep = items[0] if len(items) == 1 else None
            if keep is None and _first(items):
                keep = next(item for item in items if _is_first_party(item[1]))
            for ep, dist, version in items:
                if keep is not None and ep is keep[0]:
                    continue
                others = ", ".join(sorted(f"{d} {v}" for e, d, v in items if e is not ep))
                why = (
                    "belongs to the first-party plugin of " + others
                    if keep is not None
                    else f"is also used by {others}, so it is refused for all of them"
                )
                self._load_failures.append(
                    PluginFailure(
                        name,
                        dist,
                        version,
                        "register",
                        f"entry-point name '{name}' {why}; block one distribution "
                        "(SELECTKIT_BLOCK_PLUGINS) or ask its authors to rename it",
                    )
                )
            if keep is not None:
                ep, dist, version = keep
                self._register(ep.name, ep.load, (dist, version), False)

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

            dist_name, version = FIRST_PARTY, __version__
        try:
            plugin = load()
        except Exception as exc:
            self._load_failures.append(
                PluginFailure(name, dist_name, version, "import", _describe(exc))
            )
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            self._load_failures.append(
                PluginFailure(name, dist_name, version, "register", _describe(exc))
            )
            return
        first = builtin or _is_first_party(dist_name)
        self.plugins[name] = PluginInfo(name, dist_name, version, builtin, first_party=first)

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
                self._load_failures.append(
                    PluginFailure(
                        name,
                        info.distribution if info else None,
                        info.version if info else None,
                        "validate",
                        str(exc),
                    )
                )

    def record_failure(self, plugin_name: str, stage: str, exc: BaseException) -> None:
        self._load_failures.append(self._failure(plugin_name, stage, exc))

    def _failure(self, plugin_name: str, stage: str, exc: BaseException) -> PluginFailure:
        info = self.plugins.get(plugin_name)
        return PluginFailure(
            plugin_name,
            info.distribution if info else None,
            info.version if info else None,
            stage,
            _describe(exc),
        )

    # -- filters that named nothing -----------------------------------------------------

    def _unmatched_only(self, names: list[str], label: str, found: list[Any]) -> None:
        builtins = [n for n in names if n in BUILTIN_PLUGINS or _short_builtin(n)]
        for name in builtins:
            self.warn(
                f"{label} names '{name}', a built-in module: built-ins always load; "
                f"{label} chooses among installed plugins"
            )
        others = [n for n in names if n not in builtins]
        if others:
            plugins = ", ".join(sorted({ep.name for ep, _, _ in found})) or "none"
            dists = ", ".join(sorted({d for _, d, _ in found if d})) or "none"
            self.warn(
                f"{label} names {_listed(others)}, which match{_s(others)} no installed plugin "
                f"or distribution, so nothing was loaded for it; plugins: {plugins} "
                f"(distributions: {dists}). Name plugins, not methods: `selectkit plugins` "
                "shows which plugin provides what"
            )

    def _unmatched_blocked(self, names: list[str], label: str, builtins: Iterable[str]) -> None:
        providers: dict[str, list[str]] = {}
        for kind, what in KINDS.items():
            registry = self._registry(kind)
            for name in names:
                claim = registry.held.get(name)
                if claim is not None:
                    providers.setdefault(name, []).append(f"a {what} of {claim.plugin.origin()}")
        for name in names:
            if name in providers:
                what = " and ".join(providers[name])
                self.warn(
                    f"{label} names '{name}', which is not a plugin but {what}, so nothing "
                    "was blocked for it; block the plugin (which blocks all it provides), or just "
                    "do not use the name"
                )
        rest = [n for n in names if n not in providers]
        if rest:
            plugins = ", ".join(n for n, i in self.plugins.items() if not i.builtin) or "none"
            dists = sorted({i.distribution for i in self.plugins.values() if i.distribution})
            modules = ", ".join(m.rsplit(".", 1)[-1] for m in builtins)
            self.warn(
                f"{label} names {_listed(rest)}, which match{_s(rest)} no plugin, distribution "
                f"or built-in, so nothing was blocked for it; plugins: {plugins} (distributions: "
                f"{', '.join(dists) or 'none'}; built-ins: {modules})"
            )

    # -- tracing ------------------------------------------------------------------------

    def _trace_hook(self, outcome: Any, hook_name: str, impls: Any, kwargs: Any) -> None:
        if outcome.exception is not None:
            self._trace_line(hook_name, kwargs, error=outcome.exception)
        else:
            self._trace_line(hook_name, kwargs, result=outcome.get_result())

    def _trace_line(
        self,
        call: str,
        kwargs: Mapping[str, Any],
        *,
        result: Any = None,
        error: BaseException | None = None,
    ) -> None:
        if self._trace:
            sys.stderr.write(f"trace: {trace_line(call, kwargs, result=result, error=error)}\n")


# -- helpers --------------------------------------------------------------------------------


def env_flag(name: str, notes: list[str] | None = None) -> bool:
    """A yes/no environment variable: 1/true/yes/on, or 0/false/no/off/empty (unset: no).
    Anything else is no, with a note appended to ``notes`` (the caller warns)."""
    value = os.environ.get(name)
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in _YES:
        return True
    if lowered not in _NO and notes is not None:
        notes.append(
            f"{name}={value!r} is not a yes/no value (1, true, yes, on / 0, false, no, off); "
            "taken as off"
        )
    return False


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _entry_points() -> list[tuple[Any, str | None, str | None]]:
    """Every entry point of the group with its distribution's name and version."""
    found = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        name = dist.metadata["Name"] if dist is not None else None
        found.append((ep, name, dist.version if dist is not None else None))
    return found


def _is_first_party(dist: str | None) -> bool:
    return dist is not None and normalize(dist) == FIRST_PARTY


def _first(items: list[tuple[Any, str | None, str | None]]) -> bool:
    return any(_is_first_party(dist) for _, dist, _ in items)


def _names(ep: Any, dist: str | None, name: str) -> bool:
    """Whether filter entry ``name`` names entry point ``ep`` (or its distribution)."""
    return name == ep.name or (dist is not None and normalize(name) == normalize(dist))


def _short_builtin(name: str) -> bool:
    return any(m.rsplit(".", 1)[-1] == name for m in BUILTIN_PLUGINS)


def _listed(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _s(names: Sequence[str]) -> str:
    """The verb's ending for one name or several."""
    return "es" if len(names) == 1 else ""


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
