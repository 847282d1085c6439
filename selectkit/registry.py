"""Who holds a name: each plugin's registrations, the conflicts between them, and lookups
by plain or qualified name (``plugin:name``, ``distribution:name``).

The rule (see :mod:`selectkit.host` for where it is applied): a first-party plugin keeps its
names; a name that several third-party plugins register belongs to none of them; any
registration stays reachable by its qualified name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: What each registration hook registers, and what one of it is called in messages.
KINDS = {
    "methods": "method",
    "solvers": "solver",
    "formats": "format",
    "shapes": "shape",
    "projectors": "projector",
}


@dataclass
class PluginInfo:
    """One loaded plugin and what it provides (and was refused: names others hold)."""

    name: str
    distribution: str | None
    version: str | None
    builtin: bool
    provides: dict[str, list[str]] = field(default_factory=dict)
    first_party: bool = False
    refused: dict[str, list[str]] = field(default_factory=dict)

    def origin(self) -> str:
        """``plugin 'dsir' (selectkit 0.1.0)``, for messages."""
        if self.distribution is None:
            return f"plugin '{self.name}' (registered in-process)"
        return f"plugin '{self.name}' ({self.distribution} {self.version})"


@dataclass(frozen=True)
class Claim:
    """One plugin's registration of one name."""

    plugin: PluginInfo
    name: str
    obj: Any


@dataclass(frozen=True)
class NameConflict:
    """A name claimed by more than one plugin: ``holder`` keeps it (a first-party plugin), or
    nobody does (``holder`` is None) and every claimant is ``refused``. ``kind`` is what the
    name names: ``method``, ``solver``, ``format``, ``shape``, ``projector`` or ``command``."""

    kind: str
    name: str
    holder: Claim | None
    refused: tuple[Claim, ...]

    def message(self) -> str:
        what = f"{self.kind} '{self.name}'"
        qualified = self.kind in KINDS.values()  # commands have no qualified names
        if self.holder is not None:
            others = " and ".join(c.plugin.origin() for c in self.refused)
            picks = " or ".join(f"'{c.plugin.name}:{self.name}'" for c in self.refused)
            other = f" (name the other one as {picks})" if qualified else ""
            return (
                f"{others} also registers {what}, which belongs to the first-party "
                f"{self.holder.plugin.origin()}: refused, '{self.name}' means the first-party "
                f"one{other}"
            )
        claimants = " and ".join(c.plugin.origin() for c in self.refused)
        picks = " or ".join(f"'{_qualifier(c, self.refused)}:{self.name}'" for c in self.refused)
        pick = f"pick one by its qualified name, {picks}, or " if qualified else ""
        return (
            f"{what} is registered by {claimants}: refused for all of them; {pick}block the "
            "distributions you do not want (SELECTKIT_BLOCK_PLUGINS)"
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-ready form, for ``selectkit plugins --json``."""
        return {
            "kind": self.kind,
            "name": self.name,
            "holder": _describe_claim(self.holder) if self.holder else None,
            "refused": [_describe_claim(c) for c in self.refused],
            "message": self.message(),
        }


def _describe_claim(claim: Claim) -> dict[str, Any]:
    info = claim.plugin
    return {"plugin": info.name, "distribution": info.distribution, "version": info.version}


def _qualifier(claim: Claim, among: Sequence[Claim]) -> str:
    """The distribution's name, unless it is shared with another claimant (then the plugin's)."""
    dist = claim.plugin.distribution
    if dist is None or sum(c.plugin.distribution == dist for c in among) > 1:
        return claim.plugin.name
    return dist


def normalize(name: str) -> str:
    """A distribution name as packaging compares them (PEP 503): ``Selectkit_Keyword`` ->
    ``selectkit-keyword``."""
    return re.sub(r"[-_.]+", "-", name).lower()


class Registry(Mapping[str, Any]):
    """The names of one kind after the precedence rule, mapping to classes.

    Iterating gives the unqualified names that have one holder, in registration order (the
    order formats are detected and solvers tried). Lookups also accept ``qualifier:name``,
    where the qualifier is a plugin (entry-point) name, a distribution name or, for the
    built-ins, a module name.
    """

    def __init__(self, kind: str, claims: dict[str, list[Claim]]) -> None:
        self.kind = kind
        label = KINDS.get(kind, kind)
        self.claims = claims
        self.held: dict[str, Claim] = {}
        self.conflicts: list[NameConflict] = []
        for name, found in claims.items():
            classes = _distinct(found)
            if len(classes) == 1:
                self.held[name] = found[0]
                continue
            firsts = [c for c in classes if c.plugin.first_party]
            holder = firsts[0] if firsts else None
            refused = tuple(c for c in classes if c is not holder)
            if holder is not None:
                self.held[name] = holder
            self.conflicts.append(NameConflict(label, name, holder, refused))

    def __getitem__(self, key: str) -> Any:
        return self.claim(key).obj

    def __iter__(self) -> Iterator[str]:
        return iter(self.held)

    def __len__(self) -> int:
        return len(self.held)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            self.claim(key)
        except KeyError:
            return False
        return True

    def claim(self, key: str) -> Claim:
        """The registration ``key`` names; :class:`KeyError` when none or several do."""
        if key in self.held:
            return self.held[key]
        qualifier, sep, name = key.rpartition(":")
        if not sep or name not in self.claims:
            raise KeyError(key)
        matches = _distinct([c for c in self.claims[name] if _matches(c.plugin, qualifier)])
        if len(matches) == 1:
            return matches[0]
        holder = self.held.get(name)
        if holder is not None and any(c.obj is holder.obj for c in matches):
            return holder
        raise KeyError(key)

    def holder_of(self, obj: Any) -> Claim | None:
        """The registration of class ``obj`` (the holder's, when several plugins return it)."""
        found = [c for claims in self.claims.values() for c in claims if c.obj is obj]
        held = [c for c in found if self.held.get(c.name) is c]
        return (held or found or [None])[0]

    def explain(self, key: str) -> str:
        """Why ``key`` names nothing, and what the user can pick instead."""
        label = KINDS.get(self.kind, self.kind)
        qualifier, sep, name = key.rpartition(":")
        if not sep:
            for conflict in self.conflicts:
                if conflict.name == key:
                    return conflict.message()
            known = ", ".join(sorted(self.held)) or "none"
            return f"no {label} named '{key}'; available: {known}"
        if name not in self.claims:
            known = ", ".join(sorted(self.held)) or "none"
            return f"no {label} named '{name}' (in '{key}'); available: {known}"
        sources = sorted({f"{c.plugin.name} ({c.plugin.distribution})" for c in self.claims[name]})
        return (
            f"no {label} '{name}' comes from a plugin or distribution named '{qualifier}' "
            f"(or it names several): '{name}' comes from {', '.join(sources)}; qualify it with "
            "one plugin name"
        )


def _distinct(claims: Iterable[Claim]) -> list[Claim]:
    """The first claim of each distinct class: one class returned by two plugins is no clash."""
    seen: list[Claim] = []
    for claim in claims:
        if not any(claim.obj is other.obj for other in seen):
            seen.append(claim)
    return seen


def _matches(info: PluginInfo, qualifier: str) -> bool:
    if qualifier in (info.name, info.name.rsplit(".", 1)[-1]):
        return True
    return info.distribution is not None and normalize(info.distribution) == normalize(qualifier)
