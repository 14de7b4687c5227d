# Runs after boot.py: the board's whole life (see board.py). Ctrl-C stops it and leaves the REPL.
import board

board.main()
