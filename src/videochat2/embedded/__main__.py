"""`python -m videochat2.embedded --out DIR ...`: build the embedded world under DIR (see build.py)."""

import sys

from videochat2.embedded.build import main

if __name__ == "__main__":
    sys.exit(main())
