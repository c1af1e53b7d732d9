"""Create the roles and apply the numbered SQL files of this folder to the configured database. Idempotent."""

from smartshelf.runtime.jobs import db_init
from smartshelf.settings import get_settings

if __name__ == "__main__":
    print(f"db-init: applied {', '.join(db_init(get_settings()))}")
