"""Typed options: every method declares its options; a typo or an unknown mode is one clear error.

    python examples/configs.py
"""

import recursa

print(recursa.LatentMAS.Config())                                   # every option with its default
for doc in recursa.LatentMAS.Config.describe()[:4]:
    print(f"  {doc.name} ({doc.type}) = {doc.default!r}: {doc.doc}")

config = recursa.LatentMAS.Config(latent_steps=8, realign="ridge+norm", layout="stacked")
print("a valid config:", config.latent_steps, config.realign, config.layout)

model = recursa.load()
for name, bad in (("text-mas", {"patern": "hierarchical"}), ("latent-mas", {"latent_step": 8}),
                  ("latent-mas", {"realign": "ridge+nrom"})):
    try:
        recursa.create(name, model, **bad)
    except recursa.ConfigError as error:
        print("refused:", error)
