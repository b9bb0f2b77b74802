"""`python -m conch`: the same as the conch-operator console script."""

from conch.main import main

main()
