"""tcplab: measure how much kernel memory a TCP connection costs on Linux."""

__version__ = "0.1.0"
