import sys

from natgrad.cli import main

sys.exit(main())
