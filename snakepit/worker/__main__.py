"""Entry point: ``python -m snakepit.worker --adapter pkg.mod:Class --listen unix:PATH``."""

from snakepit.worker._main import run

if __name__ == "__main__":
    run()
