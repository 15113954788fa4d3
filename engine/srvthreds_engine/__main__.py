"""`python -m srvthreds_engine`: the `srvthreds-engine` command."""

import sys

from srvthreds_engine.apps.cli import main

sys.exit(main())
