"""``python -m kvstore serve ...`` is ``kvstore serve ...``."""

import sys

from kvstore.cli.server import main

sys.exit(main())
