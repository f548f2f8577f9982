"""One module per ``courier`` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``."""
