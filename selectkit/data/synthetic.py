"""A generator of instruction-tuning pools made of clearly different task families.

Each family writes alpaca-shaped records (``instruction``, ``input``, ``output``) with a
``family`` field, from a seeded generator, with varied wording so that a family is recognizable
by its content rather than by one fixed sentence. A held-out target set is drawn with another
id prefix and told to avoid the pool's records, so the two never share an example. Used by
``selectkit demo`` and by tests that check whether a method finds the target's family.
"""

from __future__ import annotations

import datetime
import json
import random
from collections.abc import Callable, Sequence

Example = tuple[str, str, str]

_NAMES = ["Ada", "Ben", "Chloe", "Dev", "Elif", "Farid", "Greta", "Hugo", "Iris", "Jonas"]
_ITEMS = ["apples", "pencils", "marbles", "stickers", "books", "cookies", "coins", "shells"]
_WORDS = [
    "river",
    "planet",
    "garden",
    "silver",
    "window",
    "forest",
    "candle",
    "rocket",
    "pepper",
    "violin",
    "harbor",
    "meadow",
    "castle",
    "tunnel",
    "lantern",
    "puzzle",
    "breeze",
    "anchor",
]
_LEXICON = dict(
    pair.split(":")  # English word : made-up "Veltish" word
    for pair in [
        "the:ka",
        "cat:miru",
        "dog:tolo",
        "eats:vesh",
        "sees:onda",
        "big:gral",
        "small:pim",
        "fish:suna",
        "bird:fliri",
        "runs:dako",
        "house:bemo",
        "red:roja",
        "green:vira",
        "tree:lumo",
        "water:aqa",
        "drinks:bibo",
    ]
)
_UNITS = [
    ("kilometers", "meters", 1000.0),
    ("meters", "centimeters", 100.0),
    ("kilograms", "grams", 1000.0),
    ("hours", "minutes", 60.0),
    ("liters", "milliliters", 1000.0),
    ("miles", "kilometers", 1.609344),
    ("pounds", "kilograms", 0.45359237),
    ("inches", "centimeters", 2.54),
]


def _arithmetic(rng: random.Random) -> Example:
    name, other = rng.sample(_NAMES, 2)
    item = rng.choice(_ITEMS)
    a, b, c = rng.randint(3, 60), rng.randint(2, 40), rng.randint(1, 20)
    question = (
        f"{name} has {a} {item}. {other} gives {name} {b} more, and then {name} gives away {c}. "
        f"How many {item} does {name} have now?"
    )
    answer = f"{name} starts with {a}, gets {b} more ({a + b}), gives away {c}: {a + b - c}."
    lead = rng.choice(["Solve the word problem.", "Answer the math question.", "Work it out."])
    return lead, question, answer


def _reverse(rng: random.Random) -> Example:
    word = rng.choice(_WORDS) + rng.choice(["", "s", "ing", "ed"])
    lead = rng.choice(["Reverse the letters of the word.", "Write the word backwards."])
    return lead, word, word[::-1]


def _uppercase(rng: random.Random) -> Example:
    words = " ".join(rng.sample(_WORDS, rng.randint(3, 6)))
    lead = rng.choice(["Convert the text to upper case.", "Rewrite the phrase in capitals."])
    return lead, words, words.upper()


def _units(rng: random.Random) -> Example:
    big, small, factor = rng.choice(_UNITS)
    value = round(rng.uniform(0.5, 40), 1)
    lead = rng.choice(["Convert the quantity.", "Do the unit conversion."])
    return lead, f"{value} {big} to {small}", f"{value} {big} = {value * factor:.2f} {small}"


def _sort(rng: random.Random) -> Example:
    numbers = [rng.randint(-50, 99) for _ in range(rng.randint(4, 9))]
    lead = rng.choice(["Sort the list in ascending order.", "Order these numbers, smallest first."])
    return lead, ", ".join(map(str, numbers)), ", ".join(map(str, sorted(numbers)))


def _translate(rng: random.Random) -> Example:
    subject = rng.choice(["cat", "dog", "bird", "fish"])
    adjective = rng.choice(["big", "small", "red", "green"])
    verb = rng.choice(["eats", "sees", "drinks", "runs"])
    obj = rng.choice(["fish", "water", "tree", "house"])
    english = f"the {adjective} {subject} {verb} the {obj}"
    lead = rng.choice(["Translate into Veltish.", "Give the Veltish translation."])
    return lead, english, " ".join(_LEXICON[w] for w in english.split())


def _dates(rng: random.Random) -> Example:
    start = datetime.date(2020, 1, 1) + datetime.timedelta(days=rng.randint(0, 2000))
    days = rng.randint(1, 120)
    end = start + datetime.timedelta(days=days)
    lead = rng.choice(["Compute the date.", "What date is it after the given number of days?"])
    return lead, f"{days} days after {start.isoformat()}", end.strftime("%A, %d %B %Y")


def _json(rng: random.Random) -> Example:
    name = rng.choice(_NAMES)
    age = rng.randint(18, 90)
    city = rng.choice(["Lyon", "Osaka", "Quito", "Perth", "Oslo", "Cairo"])
    lead = rng.choice(["Format the facts as a JSON object.", "Write the details as JSON."])
    text = f"name {name}, age {age}, city {city}"
    return lead, text, json.dumps({"name": name, "age": age, "city": city})


def _count_letter(rng: random.Random) -> Example:
    word = rng.choice(_WORDS) + rng.choice(_WORDS)
    letter = rng.choice(sorted(set(word)))
    lead = rng.choice(["Count the letter in the word.", "How many times does the letter occur?"])
    count = word.count(letter)
    return lead, f"letter '{letter}' in '{word}'", f"The letter '{letter}' occurs {count} times."


def _acronym(rng: random.Random) -> Example:
    words = rng.sample(_WORDS, rng.randint(2, 5))
    lead = rng.choice(["Make an acronym from the words.", "Abbreviate with initials."])
    return lead, " ".join(words), "".join(w[0].upper() for w in words)


FAMILIES: dict[str, Callable[[random.Random], Example]] = {
    "arithmetic": _arithmetic,
    "reverse": _reverse,
    "uppercase": _uppercase,
    "units": _units,
    "sorting": _sort,
    "translation": _translate,
    "dates": _dates,
    "json": _json,
    "letter_count": _count_letter,
    "acronym": _acronym,
}


def make_records(
    per_family: int,
    *,
    seed: int = 0,
    families: list[str] | None = None,
    id_prefix: str = "pool",
    avoid: Sequence[dict[str, str]] = (),
) -> list[dict[str, str]]:
    """``per_family`` records of each family, shuffled, with ids ``{id_prefix}-{n}``.

    Records whose input and output equal those of a record in ``avoid`` are drawn again.
    """
    names = families or list(FAMILIES)
    unknown = sorted(set(names) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown task families {unknown}; known: {sorted(FAMILIES)}")
    rng = random.Random(f"{id_prefix}:{seed}")
    taken = {(row["input"], row["output"]) for row in avoid}
    rows = []
    for family in names:
        for _ in range(per_family):
            instruction, text, output = _draw(FAMILIES[family], rng, taken, family)
            rows.append(
                {"instruction": instruction, "input": text, "output": output, "family": family}
            )
    rng.shuffle(rows)
    return [{"id": f"{id_prefix}-{i}", **row} for i, row in enumerate(rows)]


def _draw(
    family: Callable[[random.Random], Example],
    rng: random.Random,
    taken: set[tuple[str, str]],
    name: str,
) -> Example:
    for _ in range(1000):
        instruction, text, output = family(rng)
        if (text, output) not in taken:
            return instruction, text, output
    raise ValueError(f"task family '{name}' has no unused example left to draw")
