"""python -m amptools: the command line."""

from .cli import main_entry

main_entry()
