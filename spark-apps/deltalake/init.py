"""Bootstrap the Delta lake layout (raw, cleansed, ops, analytics) empty, from the registry's schemas."""

from smartshelf.runtime.jobs import delta_init
from smartshelf.settings import get_settings

if __name__ == "__main__":
    created = delta_init(get_settings())
    print(f"delta-init: created {len(created)} tables: {', '.join(created) or '-'}")
