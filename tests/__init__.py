"""snakepit's test suite.

Bytecode caching is on in every pytest process of the suite, even where
``PYTHONDONTWRITEBYTECODE`` is set (as ``make pytest`` has it with
``env -u``, now for a plain ``pytest`` too). This package is imported before
any conftest or test module: without it, each xdist process rewrote the
asserts of every test module again (pytest caches them as bytecode only when
it may write bytecode; ~3 CPU-s per process) and compiled snakepit from
source, and so did every fork server and worker the suite starts for a module
whose cached bytecode an edit had made stale. The files go where Python puts
them by default (``__pycache__``, ignored by git).
"""

import sys

sys.dont_write_bytecode = False
