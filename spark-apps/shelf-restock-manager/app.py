"""Shell: the shelf-restock-manager streaming app alone, as compose runs it (smartshelf.streaming.keyed_loop)."""

from smartshelf.settings import get_settings
from smartshelf.streaming.runner import run

if __name__ == "__main__":
    run(get_settings(), ["shelf-restock-manager"])
