"""The whole plugin contract of selectkit.

A plugin is any module or object with functions named like the hooks below, decorated with
``selectkit.hookimpl``. Install it with an entry point in the ``selectkit`` group::

    [project.entry-points.selectkit]
    my_method = "my_package.plugin"

Registration hooks return lists of classes (the datasette style); the host calls them on each
plugin on its own, so one plugin that raises is reported (``selectkit plugins``) and the others
still count. Loader hooks are ``firstresult``: the first plugin that returns something other
than ``None`` wins, so a plugin can teach selectkit a new file format, data source, tokenizer or
model source without touching the core.

Names (who wins; ``tryfirst`` and entry-point names change nothing here):

- A registered class's ``name`` is what users type; it may not contain ``:``.
- selectkit's own names (the built-ins and the ``selectkit`` distribution's methods) cannot be
  taken: registering one is refused for that name and reported as a conflict.
- A name two third-party plugins register is refused for both and reported.
- Users can always pick a registration by its qualified name, ``distribution:name`` or
  ``plugin:name`` (``--method selectkit-keyword:keyword``).

Loaders are asked in this order: first-party plugins alone for the names selectkit ships
(``smollm2``, ``tiny-llama[:...]``, ``tiny-gpt2[:...]``), then every plugin, then the built-in
fallback (a local file or folder, a hub name). Return ``None`` for anything you do not know.

``SELECTKIT_TRACE=1`` prints one line per hook call (each plugin's registration included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from selectkit.markers import hookspec

if TYPE_CHECKING:
    import click

    from selectkit.compute.projectors import Projector
    from selectkit.data.formats import Format, LoadOptions, RawRow
    from selectkit.data.shapes import Shape
    from selectkit.methods import Method
    from selectkit.models.loading import LoadedModel, ModelOptions
    from selectkit.solvers.base import Solver


@hookspec
def selectkit_register_methods() -> list[type[Method]]:
    """Return the selection method classes this plugin provides.

    Each class subclasses :class:`selectkit.methods.Method`, has a unique ``name`` (what users
    pass to ``--method``), a ``Params`` dataclass, and an ``objective`` method that returns an
    :class:`~selectkit.solvers.objectives.Objective` for the shared solver.
    """


@hookspec
def selectkit_register_solvers() -> list[type[Solver]]:
    """Return the solver classes this plugin provides.

    Each class subclasses :class:`selectkit.solvers.base.Solver` and declares the objective
    types it handles. Users choose one with ``--solver NAME``; otherwise the first registered
    solver that accepts the objective is used.
    """


@hookspec
def selectkit_register_formats() -> list[type[Format]]:
    """Return file format classes (JSONL, Parquet, ...) that read rows from a path.

    Each subclasses :class:`selectkit.data.formats.Format` with a ``name`` (``--format``) and
    the file suffixes it recognizes.
    """


@hookspec
def selectkit_register_shapes() -> list[type[Shape]]:
    """Return record shape classes (alpaca, chat, ...) that turn a row into prompt and response.

    Each subclasses :class:`selectkit.data.shapes.Shape` with a ``name`` (``--shape``) and a way
    to recognize rows of its shape when the user does not name one.
    """


@hookspec
def selectkit_register_projectors() -> list[type[Projector]]:
    """Return random projector classes that shrink per-example gradients to a few thousand dims.

    Each subclasses :class:`selectkit.compute.projectors.Projector` with a ``name`` and is
    built from ``(input_dim, output_dim, seed, device, dtype)``; the same seed must give the same
    projection on any machine, device and shard. Import torch inside the class, not at module
    level, so ``selectkit --help`` stays fast.
    """


@hookspec(firstresult=True)
def selectkit_load_records(
    source: str, options: LoadOptions, formats: dict[str, type[Format]]
) -> list[RawRow] | None:
    """Read the rows of ``source``, or return ``None`` if this plugin does not handle it.

    Implement this to support a new kind of source (a database, an object store, a bespoke
    container). Rows carry their 1-based line or row number so errors can name them.
    ``formats`` are the registered file formats by name, for sources that hold files.
    """


@hookspec(firstresult=True)
def selectkit_load_tokenizer(spec: str, trust_remote_code: bool) -> Any | None:
    """Return a Hugging Face tokenizer for ``spec``, or ``None`` if this plugin does not know it.

    The built-in implementation reads local paths, the bundled offline model and (when online)
    hub names. ``trust_remote_code`` is only ever true when the user asked for it.
    """


@hookspec(firstresult=True)
def selectkit_load_model(spec: str, options: ModelOptions) -> LoadedModel | None:
    """Return a :class:`~selectkit.models.loading.LoadedModel` (a causal LM and its tokenizer)
    for ``spec``, or ``None`` if this plugin does not know it.

    The built-in implementation knows local folders, hub names (when online), ``smollm2`` (the
    bundled offline model) and ``tiny-llama`` / ``tiny-gpt2``. Honour ``options.dtype`` and
    ``options.trust_remote_code``; the host moves the model to ``options.device`` afterwards.
    """


@hookspec
def selectkit_register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``selectkit`` command-line group.

    Use ``@cli.command()`` inside the hook. Import heavy libraries inside the command, not at
    module level, so ``selectkit --help`` stays fast. selectkit's own commands cannot be
    replaced, and a command name two plugins add is refused for both.
    """
