"""``python -m bltriton.demo demo|experiments``: the demo's subcommands on their own."""

from __future__ import annotations

import sys

from bltriton.demo.cli import main

if __name__ == "__main__":
    sys.exit(main())
