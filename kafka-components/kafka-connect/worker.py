"""Shell: the embedded connect worker, running the connector configs in this folder (smartshelf.apps.connect_worker)."""

from smartshelf.apps.connect_worker import main
from smartshelf.settings import get_settings

if __name__ == "__main__":
    main(get_settings())
