"""Shell: the config tables polled into their compacted topics (smartshelf.apps.config_source)."""

from smartshelf.apps.config_source import main
from smartshelf.settings import get_settings

if __name__ == "__main__":
    main(get_settings())
