"""Shell: the simulated clock (sim:now, sim:today) (smartshelf.apps.clock_service)."""

from smartshelf.apps.clock_service import main
from smartshelf.settings import get_settings

if __name__ == "__main__":
    main(get_settings())
