"""What is read from a measured kernel, and the pure analysis of it."""
