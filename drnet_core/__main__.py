import sys

from drnet_core.cli import main

sys.exit(main())
