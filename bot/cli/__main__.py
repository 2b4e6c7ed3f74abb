"""`python -m bot.cli`: the same as the `supportbot` command."""

from bot.cli import main

main()
