"""Use cases by capability, over the storage layer; the web layer and the CLI call these."""
