"""Shell: the store's sensors: foot traffic, shelf and POS events into Redis Streams (smartshelf.apps.producers)."""

from smartshelf.apps.producers import main
from smartshelf.settings import get_settings

if __name__ == "__main__":
    main(get_settings())
