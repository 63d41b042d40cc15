"""``python -m services.audit``: see :mod:`services.audit.cli`."""

import sys

from services.audit.cli import main

sys.exit(main())
