"""Shell: rebuild analytics.shelf_daily_features from the lake once and exit: `smartshelf ml features` (compose
runs it as a one-shot service). The rows are a replay of the lake, not a streaming query (docs/architecture.md,
"Demand forecasting"); on the embedded stack the inference service writes them each simulated day before it
forecasts."""

import sys

from smartshelf.cli import main

if __name__ == "__main__":
    sys.argv = ["smartshelf", "ml", "features", *sys.argv[1:]]
    main()
