"""The MEMS mirror stand: physics, disturbances and its firmware emulator."""
