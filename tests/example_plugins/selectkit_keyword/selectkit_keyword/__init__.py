"""An out-of-tree selectkit plugin, installed by the test suite exactly as a user would."""

from dataclasses import dataclass, field

import click
import numpy as np

from selectkit import Context, Method, Pool, Scores, hookimpl


@dataclass(frozen=True)
class KeywordParams:
    words: tuple[str, ...] = field(
        default=("python",), metadata={"help": "Keywords; a record scores one per mention."}
    )


class Keyword(Method):
    """Records that mention the most keywords."""

    name = "keyword"
    Params = KeywordParams

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Scores:
        words = [w.lower() for w in self.params.words]
        counts = [sum(r.text.lower().count(w) for w in words) for r in pool]
        return Scores(np.asarray(counts, dtype=float))


@hookimpl
def selectkit_register_methods():
    return [Keyword]


@hookimpl
def selectkit_register_commands(cli):
    @cli.command("keyword-hello")
    def keyword_hello():
        """Say hello from the keyword plugin."""
        click.echo("hello from selectkit-keyword")
