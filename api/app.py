"""Shell: the live API, REST and the WebSocket event feed, on API_HOST:API_PORT (smartshelf.api.app)."""

from smartshelf.api.app import main
from smartshelf.settings import get_settings

if __name__ == "__main__":
    main(get_settings())
