"""The edge's policy runtime: manifest, validation in a child process, the slot that swaps policies."""
