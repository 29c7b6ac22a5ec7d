import sys

from profashion.cli import main

sys.exit(main())
