"""snakepit.testing: the pytest plugin, leak checks, worker helpers, measure."""
