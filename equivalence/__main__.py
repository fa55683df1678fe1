"""``python -m equivalence <command>``: see ``equivalence.cli``."""

import sys

from equivalence.cli import main

sys.exit(main())
