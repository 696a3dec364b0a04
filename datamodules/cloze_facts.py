"""A cloze probe of world knowledge written by the suite: short prompts and their completions.

Each fact is a prompt such as ``"The capital of France is"`` with the expected completion
``"Paris"``. A model counts as recalling the fact when its greedy continuation starts with the completion
(after answer normalisation). Facts were chosen to have one short, unambiguous completion
without diacritics or initials, so normalisation compares them reliably.
"""

from __future__ import annotations

from datamodules.builtin_corpora import CAPITALS, CHEMICAL_SYMBOLS

# Capitals whose country name needs an article, or whose capital is disputed, are handled here.
COUNTRY_NAMES = {"netherlands": "the Netherlands", "czech republic": "the Czech Republic", "philippines": "the Philippines"}
DISPUTED_CAPITALS = {"israel", "south africa"}

AUTHORS = {
    "Pride and Prejudice": "Jane Austen", "Emma": "Jane Austen", "Sense and Sensibility": "Jane Austen",
    "Romeo and Juliet": "William Shakespeare", "Hamlet": "William Shakespeare", "Macbeth": "William Shakespeare",
    "Othello": "William Shakespeare", "War and Peace": "Leo Tolstoy", "Anna Karenina": "Leo Tolstoy",
    "Crime and Punishment": "Fyodor Dostoevsky", "The Brothers Karamazov": "Fyodor Dostoevsky",
    "Animal Farm": "George Orwell", "Nineteen Eighty-Four": "George Orwell", "Moby-Dick": "Herman Melville",
    "The Adventures of Tom Sawyer": "Mark Twain", "Adventures of Huckleberry Finn": "Mark Twain",
    "Don Quixote": "Miguel de Cervantes", "The Odyssey": "Homer", "The Iliad": "Homer",
    "Frankenstein": "Mary Shelley", "Dracula": "Bram Stoker", "Oliver Twist": "Charles Dickens",
    "A Tale of Two Cities": "Charles Dickens", "Great Expectations": "Charles Dickens",
    "The Old Man and the Sea": "Ernest Hemingway", "To Kill a Mockingbird": "Harper Lee",
    "Les Miserables": "Victor Hugo", "The Divine Comedy": "Dante", "Ulysses": "James Joyce",
    "Madame Bovary": "Gustave Flaubert", "The Metamorphosis": "Franz Kafka", "The Raven": "Edgar Allan Poe",
    "Brave New World": "Aldous Huxley", "Lord of the Flies": "William Golding", "Of Mice and Men": "John Steinbeck",
    "The Grapes of Wrath": "John Steinbeck", "Little Women": "Louisa May Alcott",
    "The Picture of Dorian Gray": "Oscar Wilde", "Treasure Island": "Robert Louis Stevenson",
    "The Jungle Book": "Rudyard Kipling", "Robinson Crusoe": "Daniel Defoe", "Gulliver's Travels": "Jonathan Swift",
    "The Canterbury Tales": "Geoffrey Chaucer", "Paradise Lost": "John Milton", "On the Origin of Species": "Charles Darwin",
}

LANGUAGES = {
    "Brazil": "Portuguese", "Mexico": "Spanish", "Argentina": "Spanish", "Japan": "Japanese", "Germany": "German",
    "Austria": "German", "France": "French", "Italy": "Italian", "Russia": "Russian", "Greece": "Greek",
    "Poland": "Polish", "Sweden": "Swedish", "Turkey": "Turkish", "Egypt": "Arabic", "Portugal": "Portuguese",
}

CURRENCIES = {
    "Japan": "yen", "the United Kingdom": "pound", "India": "rupee", "Russia": "ruble", "China": "renminbi",
    "Mexico": "peso", "Switzerland": "franc", "South Korea": "won", "Poland": "zloty", "Sweden": "krona",
}

SCIENCE = [
    ("The largest planet in the solar system is", "Jupiter"),
    ("The planet closest to the Sun is", "Mercury"),
    ("The chemical formula of water is", "H2O"),
    ("The hardest natural mineral is", "diamond"),
    ("The speed of light in vacuum is about 300,000 kilometres per", "second"),
    ("The powerhouse of the cell is the", "mitochondria"),
    ("The gas that plants absorb from the air for photosynthesis is", "carbon dioxide"),
    ("The theory of general relativity was developed by", "Albert Einstein"),
    ("The first person to walk on the Moon was", "Neil Armstrong"),
    ("The longest river in Africa is the", "Nile"),
    ("The largest ocean on Earth is the", "Pacific"),
    ("The tallest mountain on Earth is Mount", "Everest"),
]


def cloze_facts() -> list[dict]:
    """Return the probe's rows: ``{"prompt", "answer", "category"}``."""
    rows = []
    for country, capital in CAPITALS.items():
        if country in DISPUTED_CAPITALS:
            continue
        name = COUNTRY_NAMES.get(country, country.title())
        rows.append({"prompt": f"The capital of {name} is", "answer": capital.title(), "category": "capital"})
    for element, symbol in CHEMICAL_SYMBOLS.items():
        rows.append({"prompt": f"The chemical symbol of {element} is", "answer": symbol.capitalize(), "category": "symbol"})
    for book, author in AUTHORS.items():
        rows.append({"prompt": f"{book} was written by", "answer": author, "category": "author"})
    for country, language in LANGUAGES.items():
        rows.append({"prompt": f"The official language of {country} is", "answer": language, "category": "language"})
    for country, currency in CURRENCIES.items():
        rows.append({"prompt": f"The currency of {country} is the", "answer": currency, "category": "currency"})
    for prompt, answer in SCIENCE:
        rows.append({"prompt": prompt, "answer": answer, "category": "science"})
    return rows
