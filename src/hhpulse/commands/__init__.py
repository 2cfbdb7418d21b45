"""One module per ``hhpulse`` subcommand: ``configure(parser)`` and ``run(args) -> int``.

``configure`` builds the subcommand's options from light modules only (``hhpulse --help``
imports every one of them); everything heavy is imported inside ``run``.

May import: any stage, and ``pipelines`` (compile, run, submit, schedule).
"""
