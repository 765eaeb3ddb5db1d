from qmrbids.cli import run

run()
