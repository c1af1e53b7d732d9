"""Shell: the daily forecast at RUN_HOUR with the newest registered model (smartshelf.apps.inference)."""

from smartshelf.apps.inference import main
from smartshelf.settings import get_settings

if __name__ == "__main__":
    main(get_settings())
