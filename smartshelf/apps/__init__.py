"""Service loops: core rules wired to the adapters. The folders of the reference layout hold thin shells."""
