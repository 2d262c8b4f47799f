"""Recursa as a library: one question, answered by a single call and by a latent team.

    python examples/quickstart.py
"""

import recursa

model = recursa.load()  # the embedded Qwen2.5-Coder-0.5B-Instruct; e.g. recursa.load("qwen1.5b", device="cuda")
question = "A crate holds 12 jars and each jar holds 15 buttons. How many buttons are in 3 crates?"

for method in (recursa.Single(model, max_tokens=160), recursa.LatentMAS(model, latent_steps=4, max_tokens=160)):
    answer = method.run(question)
    print(f"{method.name:>10}: {answer.extracted}  usage {answer.usage}  trace {answer.trace_path}")
