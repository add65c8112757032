"""`python -m agent`: the same as `engee-agent`."""

from .cli import main

main()
