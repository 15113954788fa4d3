"""`python -m srvthreds_engine`: the `srvthreds-engine` command."""

import sys

from srvthreds_engine.cli import main

sys.exit(main())
