#!/usr/bin/env python3
"""Entry point for the lab: see `labctl.py --help` (the Makefile calls it with the venv)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mflab.cli import main

sys.exit(main())
