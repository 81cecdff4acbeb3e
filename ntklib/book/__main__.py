import sys

from ntklib.book.cli import main

sys.exit(main())
