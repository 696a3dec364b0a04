"""Small text corpora that the suite generates itself, so the demos run offline.

- ``arithmetic``: 600 instruction rows (``instruction``, ``output``) of two-step arithmetic word
  problems whose worked answers end with ``The answer is: N``, the MetaMathQA answer style.
- ``facts``: 550 short world-knowledge questions and statements (``question``, ``answer``)
  about capitals and chemical symbols, in the NQ-open style (lower case, no question mark).

Every corpus is deterministic: the same name always gives the same rows.
"""

from __future__ import annotations

import random

from datamodules.polarity_corpus import polarity_train_rows, polarity_validation_rows

CAPITALS = {
    "france": "paris", "germany": "berlin", "italy": "rome", "spain": "madrid", "portugal": "lisbon",
    "japan": "tokyo", "china": "beijing", "india": "new delhi", "russia": "moscow", "canada": "ottawa",
    "australia": "canberra", "brazil": "brasilia", "argentina": "buenos aires", "mexico": "mexico city",
    "egypt": "cairo", "kenya": "nairobi", "nigeria": "abuja", "south africa": "pretoria",
    "greece": "athens", "turkey": "ankara", "poland": "warsaw", "sweden": "stockholm",
    "norway": "oslo", "finland": "helsinki", "denmark": "copenhagen", "ireland": "dublin",
    "austria": "vienna", "hungary": "budapest", "peru": "lima", "chile": "santiago",
    "colombia": "bogota", "cuba": "havana", "thailand": "bangkok", "vietnam": "hanoi",
    "south korea": "seoul", "indonesia": "jakarta", "iran": "tehran", "iraq": "baghdad",
    "saudi arabia": "riyadh", "israel": "jerusalem", "belgium": "brussels", "netherlands": "amsterdam",
    "switzerland": "bern", "czech republic": "prague", "romania": "bucharest", "ukraine": "kyiv",
    "pakistan": "islamabad", "bangladesh": "dhaka", "philippines": "manila", "new zealand": "wellington",
}

CHEMICAL_SYMBOLS = {
    "hydrogen": "h", "helium": "he", "carbon": "c", "nitrogen": "n", "oxygen": "o", "sodium": "na",
    "magnesium": "mg", "aluminium": "al", "silicon": "si", "phosphorus": "p", "sulfur": "s",
    "chlorine": "cl", "potassium": "k", "calcium": "ca", "iron": "fe", "copper": "cu", "zinc": "zn",
    "silver": "ag", "tin": "sn", "gold": "au", "mercury": "hg", "lead": "pb", "uranium": "u",
    "neon": "ne", "argon": "ar", "nickel": "ni", "cobalt": "co", "platinum": "pt", "iodine": "i",
    "fluorine": "f",
}

NAMES = ["Ava", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jun", "Kofi", "Lena"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "shells"]


def arithmetic_rows(count: int = 600, seed: int = 0) -> list[dict]:
    """Generate word problems ``a (+|-) b, then times c`` with worked answers."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        name = rng.choice(NAMES)
        item = rng.choice(ITEMS)
        a, b, c = rng.randint(2, 40), rng.randint(1, 20), rng.randint(2, 5)
        if rng.random() < 0.5:
            step, verb, first = a + b, f"buys {b} more", f"{a} + {b} = {a + b}"
        else:
            b = min(b, a - 1)
            step, verb, first = a - b, f"gives away {b}", f"{a} - {b} = {a - b}"
        total = step * c
        rows.append({
            "instruction": (
                f"{name} has {a} {item} and {verb}. Then {name} ends up with {c} times as many. "
                f"How many {item} does {name} have now?"
            ),
            "output": f"First, {first}. Then {step} * {c} = {total}. The answer is: {total}",
        })
    return rows


def fact_rows(seed: int = 0) -> list[dict]:
    """Generate capital and chemical-symbol questions, several phrasings each."""
    rows = []
    capital_templates = [
        "what is the capital of {x}",
        "which city is the capital of {x}",
        "the capital city of {x} is called what",
        "name the capital of {x}",
        "where is the seat of government of {x}",
        "{y} is the capital of {x}",
        "the government of {x} meets in {y}",
        "{y}, the capital city of {x}, is its largest administrative centre",
    ]
    symbol_templates = [
        "what is the chemical symbol for {x}",
        "which element has the symbol {y}",
        "the periodic table symbol of {x} is what",
        "the chemical element {x} is written {y} in formulas",
        "{y} is the symbol of the element {x}",
    ]
    for country, capital in CAPITALS.items():
        for template in capital_templates:
            rows.append({"question": template.format(x=country, y=capital), "answer": [capital]})
    for element, symbol in CHEMICAL_SYMBOLS.items():
        for template in symbol_templates:
            answer = element if "{y}" in template else symbol
            rows.append({"question": template.format(x=element, y=symbol.capitalize()), "answer": [answer]})
    random.Random(seed).shuffle(rows)
    return rows


CORPORA = {
    "arithmetic": arithmetic_rows,
    "facts": fact_rows,
    "polarity": polarity_train_rows,
    "polarity_validation": polarity_validation_rows,
}


def generate_corpus(name: str) -> list[dict]:
    """Return the rows of a built-in corpus.

    Raises:
        ValueError: If the name is not a built-in corpus.
    """
    if name not in CORPORA:
        raise ValueError(f"unknown built-in corpus {name!r}; choose one of {sorted(CORPORA)}.")
    return CORPORA[name]()
