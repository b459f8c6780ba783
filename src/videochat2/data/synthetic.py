"""`python -m videochat2.data.synthetic`: the embedded world's command line under the name the design card
gives it. The world itself is the `videochat2.embedded` package (`python -m videochat2.embedded` is the same).
"""

from videochat2.embedded.build import build, main

__all__ = ["build", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
