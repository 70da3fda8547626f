"""`python -m trainpipe ...`: an entry point on the top floor (the CLI), like the `trainpipe` command.

Nothing imports this module; it only hands over to `cli.main`.
"""

import sys

from cli.main import main

sys.exit(main())
