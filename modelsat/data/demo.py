"""A small routing table made up in code: the data of `modelsat train --config tiny` and of the docs' examples, so that a
new machine trains, evaluates and serves a router in minutes without ../shared/data or a download.

    table = demo_table()                        # 10 subjects x 30 questions, 6 made-up models: a RoutingTable
    modelsat data demo --out my-results.csv     # the same as a 3-column CSV (text, model, score), as a user's own

It is a demo, and says so in every row (benchmark "demo (synthetic)", models named demo-*): the questions are
multiple-choice questions written from templates (arithmetic, algebra and calculus with drawn numbers; facts of
physics, chemistry, biology, history, law, economics and programming asked in several wordings), each with its right
letter; the models and their results are invented. Each model has an accuracy per category (a math model, a law model,
a generalist, a small one, ...) and each question a difficulty, so the best model depends on the question: something
to learn and to route, as in real data. Seeded: the same table on every machine.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from modelsat.data.table import RoutingTable

BENCHMARK = "demo (synthetic)"
MODELS = {  # accuracy per category, size in billions of parameters (the zoo's cost where no price is known)
    "demo-math-7b": ({"math": 0.85, "science": 0.55, "humanities": 0.30, "code": 0.50}, 7.0),
    "demo-code-13b": ({"math": 0.60, "science": 0.45, "humanities": 0.35, "code": 0.90}, 13.0),
    "demo-science-8b": ({"math": 0.55, "science": 0.85, "humanities": 0.40, "code": 0.40}, 8.0),
    "demo-law-7b": ({"math": 0.30, "science": 0.40, "humanities": 0.85, "code": 0.30}, 7.0),
    "demo-generalist-70b": ({"math": 0.75, "science": 0.75, "humanities": 0.75, "code": 0.70}, 70.0),
    "demo-small-1b": ({"math": 0.35, "science": 0.30, "humanities": 0.35, "code": 0.30}, 1.0),
}
FACTS = {  # subject -> (category, [(question, right answer, three wrong ones)])
    "physics": ("science", [
        ("What is the SI unit of force?", "newton", ["joule", "watt", "pascal"]),
        ("Which quantity is conserved in an elastic collision?", "kinetic energy", ["temperature", "friction",
                                                                                    "pressure"]),
        ("What does a voltmeter measure?", "potential difference", ["current", "resistance", "charge"]),
        ("At sea level, water boils at about which temperature?", "100 degrees Celsius",
         ["50 degrees Celsius", "0 degrees Celsius", "150 degrees Celsius"]),
        ("Which colour of visible light has the longest wavelength?", "red", ["blue", "violet", "green"]),
        ("What is the acceleration due to gravity near Earth's surface?", "about 9.8 m/s^2",
         ["about 1.6 m/s^2", "about 98 m/s^2", "about 3.0 m/s^2"])]),
    "chemistry": ("science", [
        ("What is the chemical symbol of sodium?", "Na", ["So", "Sd", "N"]),
        ("What is the pH of pure water at 25 degrees Celsius?", "7", ["0", "1", "14"]),
        ("Which gas makes up most of Earth's atmosphere?", "nitrogen", ["oxygen", "argon", "carbon dioxide"]),
        ("What kind of bond shares a pair of electrons between two atoms?", "covalent",
         ["ionic", "metallic", "hydrogen"]),
        ("How many protons does a carbon atom have?", "6", ["12", "8", "4"]),
        ("What is the formula of table salt?", "NaCl", ["KCl", "NaOH", "HCl"])]),
    "biology": ("science", [
        ("Which organelle produces most of a cell's ATP?", "mitochondrion", ["ribosome", "Golgi apparatus",
                                                                           "lysosome"]),
        ("Which enzyme unwinds the DNA double helix at the replication fork?", "helicase",
         ["ligase", "primase", "polymerase"]),
        ("What carries oxygen in human red blood cells?", "haemoglobin", ["insulin", "keratin", "collagen"]),
        ("In which organelle does photosynthesis take place?", "chloroplast", ["nucleus", "vacuole",
                                                                            "mitochondrion"]),
        ("How many chromosomes does a typical human body cell have?", "46", ["23", "44", "48"]),
        ("Which blood cells fight infection?", "white blood cells", ["red blood cells", "platelets", "plasma"])]),
    "history": ("humanities", [
        ("In which year did the Berlin Wall fall?", "1989", ["1961", "1975", "1991"]),
        ("Who was the first emperor of Rome?", "Augustus", ["Julius Caesar", "Nero", "Constantine"]),
        ("Which empire built Machu Picchu?", "the Inca", ["the Aztecs", "the Maya", "the Olmecs"]),
        ("In which century did the French Revolution begin?", "the 18th", ["the 16th", "the 17th", "the 19th"]),
        ("Which document did King John seal in 1215?", "Magna Carta", ["the Domesday Book", "the Bill of Rights",
                                                                      "the Treaty of Paris"]),
        ("Which city was the capital of the Byzantine Empire?", "Constantinople", ["Rome", "Athens",
                                                                                  "Alexandria"])]),
    "law": ("humanities", [
        ("What must a valid contract have besides offer and acceptance?", "consideration",
         ["a witness", "a notary", "a written form"]),
        ("A civil wrong that causes harm, other than a breach of contract, is called what?", "a tort",
         ["a felony", "a lien", "an easement"]),
        ("What is the legal term for a false statement that harms a person's reputation?", "defamation",
         ["perjury", "fraud", "trespass"]),
        ("Who has the burden of proof in a criminal trial?", "the prosecution", ["the defendant", "the jury",
                                                                                "the judge"]),
        ("What is the standard of proof in most civil cases?", "the balance of probabilities",
         ["beyond reasonable doubt", "certainty", "prima facie"]),
        ("What is a right to use another's land for a specific purpose called?", "an easement",
         ["a lease", "a covenant", "a mortgage"])]),
    "economics": ("humanities", [
        ("What happens to the quantity demanded when a normal good's price rises?", "it falls",
         ["it rises", "it stays the same", "it doubles"]),
        ("What is the total value of goods and services produced in a country in a year called?", "GDP",
         ["CPI", "the trade balance", "the money supply"]),
        ("What is a sustained rise in the general price level called?", "inflation",
         ["deflation", "recession", "devaluation"]),
        ("A market with a single seller is called what?", "a monopoly", ["an oligopoly", "a monopsony",
                                                                        "perfect competition"]),
        ("What does a central bank usually raise to slow inflation?", "the interest rate",
         ["taxes", "tariffs", "the minimum wage"]),
        ("The value of the next best alternative given up is called what?", "opportunity cost",
         ["sunk cost", "marginal revenue", "fixed cost"])]),
    "programming": ("code", [
        ("In Python, what does len([1, 2, 3]) return?", "3", ["2", "6", "[1, 2, 3]"]),
        ("What is the time complexity of binary search on a sorted list?", "O(log n)", ["O(n)", "O(n log n)",
                                                                                       "O(1)"]),
        ("Which data structure serves items last in, first out?", "a stack", ["a queue", "a heap", "a tree"]),
        ("In Python, what is the value of 7 // 2?", "3", ["3.5", "4", "1"]),
        ("Which SQL keyword removes duplicate rows from a result?", "DISTINCT", ["UNIQUE", "GROUP", "ONLY"]),
        ("What does HTTP status code 404 mean?", "not found", ["server error", "unauthorised", "moved"])]),
}
WORDINGS = ["{q}", "Question: {q}", "{q} Choose one option.", "Answer with a single letter. {q}",
            "A quick {subject} question. {q}"]
COMPUTED = {"arithmetic": "math", "algebra": "math", "calculus": "math"}
PER_SUBJECT = 30


def _lettered(question: str, right: str, wrong: list[str], rng: np.random.Generator) -> tuple[str, str]:
    """The question with its four options in a drawn order, and the right option's letter."""
    options = [right, *wrong]
    order = rng.permutation(len(options))
    lines = [question] + [f"{'ABCD'[i]}. {options[j]}" for i, j in enumerate(order)]
    return "\n".join(lines), "ABCD"[int(np.flatnonzero(order == 0)[0])]


def _computed(subject: str, rng: np.random.Generator) -> tuple[str, str, list[str]]:
    """One question of a subject whose answers are computed from drawn numbers."""
    if subject == "arithmetic":
        a, b = int(rng.integers(12, 99)), int(rng.integers(3, 19))
        return f"What is {a} x {b}?", str(a * b), [str(a * b + d) for d in (-b, b, 10)]
    if subject == "algebra":
        a, x, b = int(rng.integers(2, 9)), int(rng.integers(1, 12)), int(rng.integers(1, 20))
        return f"Solve for x: {a}x + {b} = {a * x + b}.", f"x = {x}", [f"x = {x + d}" for d in (1, -1, 2)]
    c, n = int(rng.integers(2, 10)), int(rng.integers(2, 9))
    return (f"What is the derivative of {c}x^{n}?", f"{c * n}x^{n - 1}",
            [f"{c}x^{n - 1}", f"{c * n}x^{n}", f"{c}x^{n + 1}/{n + 1}"])


def demo_questions(seed: int = 0) -> pd.DataFrame:
    """The demo's questions: 10 subjects (tasks) of PER_SUBJECT questions each, in 4 categories, with answers."""
    rng = np.random.default_rng(seed)
    rows = []
    for subject in [*COMPUTED, *FACTS]:
        category = COMPUTED.get(subject) or FACTS[subject][0]
        seen: set[str] = set()
        while len(seen) < PER_SUBJECT:
            if subject in COMPUTED:
                question, right, wrong = _computed(subject, rng)
            else:
                question, right, wrong = FACTS[subject][1][len(seen) % len(FACTS[subject][1])]
                wording = WORDINGS[(len(seen) // len(FACTS[subject][1])) % len(WORDINGS)]
                question = wording.format(q=question, subject=subject)
            if question in seen:
                continue
            seen.add(question)
            text, letter = _lettered(question, right, list(wrong), rng)
            rows.append({"question_id": f"demo/{subject}/{len(seen) - 1:02d}", "text": text, "benchmark": BENCHMARK,
                         "category": category, "task": subject, "source": "modelsat demo", "answer": letter})
    return pd.DataFrame(rows)


def demo_table(seed: int = 0) -> RoutingTable:
    """The demo routing table: `demo_questions`, each answered by every model of MODELS with probability its
    accuracy on the question's category less the question's difficulty (drawn in [-0.15, 0.15]); params_b as cost."""
    rng = np.random.default_rng(seed + 1)
    questions = demo_questions(seed)
    difficulty = rng.uniform(-0.15, 0.15, len(questions))
    results = [{"model": model, "question_id": qid, "score": float(rng.random() < np.clip(acc[cat] - d, 0.02, 0.98))}
               for model, (acc, _) in MODELS.items()
               for qid, cat, d in zip(questions["question_id"], questions["category"], difficulty)]
    models = pd.DataFrame({"model": list(MODELS), "cost": np.nan, "params_b": [p for _, p in MODELS.values()],
                           "cost_unit": ""})
    return RoutingTable(questions, pd.DataFrame(results), models)


def demo_csv(seed: int = 0) -> pd.DataFrame:
    """The demo table as one long table of three columns, `text`, `model`, `score`: the shape of a user's own results
    (`modelsat data build --source table --input FILE.csv`, `docs/own-data.md`)."""
    table = demo_table(seed)
    merged = table.results.merge(table.questions[["question_id", "text"]], on="question_id")
    return merged[["text", "model", "score"]]
