import sys

from medplib.cli import main

sys.exit(main())
