"""The serial wire contract between the edge and the instrument firmware (docs/protocol.md)."""
