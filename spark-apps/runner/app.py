"""Shell: every streaming app (or those named as arguments) in one SparkSession (smartshelf.streaming.runner)."""

import sys

from smartshelf.settings import get_settings
from smartshelf.streaming.runner import run

if __name__ == "__main__":
    run(get_settings(), sys.argv[1:] or None)
