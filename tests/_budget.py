"""How hard the property-based tests try.

The default keeps the whole suite inside its 30 s budget on a 2-core
machine; ``SNAKEPIT_THOROUGH=1`` multiplies the examples by 10 for a longer
hunt (``SNAKEPIT_THOROUGH=1 make pytest``).
"""

from __future__ import annotations

import os
from typing import Final

#: Multiplier of hypothesis's ``max_examples``: 1, or 10 with SNAKEPIT_THOROUGH=1.
THOROUGH: Final = 10 if os.environ.get("SNAKEPIT_THOROUGH") == "1" else 1
