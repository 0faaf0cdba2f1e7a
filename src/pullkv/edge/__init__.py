"""The edge: a cache in front of an upstream (an origin or another edge)."""
