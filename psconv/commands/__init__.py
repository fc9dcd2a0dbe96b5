"""One module per ``psconv`` subcommand; each defines ``register(subparsers)``."""
