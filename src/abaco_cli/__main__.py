"""`python -m abaco_cli`: the same as the `abaco` console script."""

from abaco_cli.cli.app import main

main()
