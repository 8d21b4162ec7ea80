"""Command-line interface (thin: parse into config, call the library, print)."""
