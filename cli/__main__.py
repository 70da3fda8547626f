"""`python -m cli ...` works like the `trainpipe` command."""

import sys

from cli.main import main

sys.exit(main())
