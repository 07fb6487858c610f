import sys

from sandbox import cli

sys.exit(cli.main())
