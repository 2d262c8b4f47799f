"""RecursiveMAS systems as data: `roles.yaml` (role prompts with slots) and system files (`default.yaml`)."""
