"""One module per ``hhpulse`` subcommand: ``configure(parser)`` and ``run(args) -> int``."""
