"""The names of the latent channel's modes, without torch: method configs (and `recursa --help`) read them."""

REALIGN_MODES = ("none", "norm", "ridge", "ridge+norm", "soft")
DEFAULT_RIDGE = 1e-5
TRANSFER_MODES = ("full", "latent-only", "own-only", "none")
REPLAYABLE_TRANSFERS = ("full", "none")      # transfers a decoder elsewhere can rebuild from the inputs alone
