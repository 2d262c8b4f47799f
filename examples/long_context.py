"""A Recursive Language Model over a text far larger than the prompt: the model reads it with code.

    python examples/long_context.py
"""

import random

import recursa

# A made-up ship's log: 3,000 entries of weather and cargo, one of which records the harbour pilot's name.
rng = random.Random(7)
weather = ["calm sea", "light rain", "fog at dawn", "strong westerly", "clear sky", "swell from the south"]
entries = [f"Day {day}: {rng.choice(weather)}; loaded {rng.randint(10, 90)} barrels." for day in range(1, 3001)]
entries[1732] = "Day 1733: fog at dawn; the harbour pilot, Ilse Marrow, came aboard at Vell."
log = "\n".join(entries)

model = recursa.load()
rlm = recursa.RLM(model, max_depth=1, max_iterations=3, max_tokens=200)
answer = rlm.run("What is the name of the harbour pilot who came aboard?", context=log)
print(f"{len(log):,} characters of context; answer: {answer.text!r}")
print(f"usage: {answer.usage}; trace: {answer.trace_path}")
