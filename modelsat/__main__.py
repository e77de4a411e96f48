"""`python -m modelsat ...`: the same as the `modelsat` command."""
import sys

from modelsat.cli import main

sys.exit(main())
