"""The CT instrument: rotation stage + detector physics, phantoms and its firmware emulator."""
