"""Shell: train the replenishment model once on the days the lake holds, register it, and exit: `smartshelf ml
train` (compose runs it as a one-shot service; arguments pass through, e.g. --holdout-days 3)."""

import sys

from smartshelf.cli import main

if __name__ == "__main__":
    sys.argv = ["smartshelf", "ml", "train", *sys.argv[1:]]
    main()
