"""guahao: online appointment registration for Chinese hospitals."""
