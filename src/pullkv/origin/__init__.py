"""The authoritative service in front of a store."""
