import sys

from ntkbook.cli import main

sys.exit(main())
