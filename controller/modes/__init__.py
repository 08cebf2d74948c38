"""Control modes: each turns the latest reading into an actuator command, every tick."""
