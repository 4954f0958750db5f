"""Raspberry Pi bench rig: gpiozero for the board's pins, USB serial to the board.

`hil.pi.wiring` reads a rig wiring file (boards/rigs/<name>.json, format in docs/hil.md),
`hil.pi.rig.PiRig` is the `hil.rig.Rig` backend that drives it, `hil.pi.board.SerialBoard`
talks to the board under test (raw REPL, file transfer, console, resets) and
`hil.pi.fakeboard.FakeBoard` is a pty stand-in for a MicroPython board (tests, dry runs).
"""
