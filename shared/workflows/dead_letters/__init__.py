"""Dead letters: queue events their consumer never took, kept for operators to read and replay."""
