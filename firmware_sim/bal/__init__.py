"""BAL instruments (issue #23): the controlled-SDE environments and the atom-forge emulator."""
