"""pullkv simulate: the edge's own cache code over hundreds of real locations, in virtual time."""
