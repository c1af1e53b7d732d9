"""Store policies: defaults with per-category overrides (conf/policies.yaml), and the config tables
(policies, batch catalog, shelf profiles) derived from an imported store. Pure: no I/O but reading the YAML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smartshelf.errors import SmartShelfError
from smartshelf.schemas import FIRST_STORE, MAX_DAYS, BatchCatalogEntry, ShelfPolicy, ShelfProfile, WarehousePolicy
from smartshelf.settings import REPO_ROOT
from smartshelf.store import StoreData

DEFAULT_POLICY_FILE = REPO_ROOT / "conf" / "policies.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShelfPolicyDefaults(_Strict):
    low_stock_threshold_pct: float = Field(gt=0, lt=1)
    restock_target_pct: float = Field(gt=0, le=1)
    near_expiry_days: int = Field(ge=0, le=MAX_DAYS)
    near_expiry_discount: float = Field(gt=0, lt=1)


class WarehousePolicyDefaults(_Strict):
    reorder_point_pct: float = Field(ge=0, lt=1)
    order_up_to_pct: float = Field(gt=0, le=1)
    lead_time_days: int = Field(ge=0, le=MAX_DAYS)
    delivery_hour: int = Field(ge=0, le=23)


class CategoryOverride(_Strict):
    shelf: dict[str, float | int] = {}
    warehouse: dict[str, float | int] = {}


class PolicyConfig(_Strict):
    shelf: ShelfPolicyDefaults
    warehouse: WarehousePolicyDefaults
    categories: dict[str, CategoryOverride] = {}

    def for_category(self, category: str) -> tuple[ShelfPolicyDefaults, WarehousePolicyDefaults]:
        override = self.categories.get(category, CategoryOverride())
        return (
            ShelfPolicyDefaults.model_validate({**self.shelf.model_dump(), **override.shelf}),
            WarehousePolicyDefaults.model_validate({**self.warehouse.model_dump(), **override.warehouse}),
        )


def load_policy_config(path: Path = DEFAULT_POLICY_FILE) -> PolicyConfig:
    try:
        config = PolicyConfig.model_validate(yaml.safe_load(path.read_text()))
        for category in config.categories:
            config.for_category(category)  # overrides are validated too
    except FileNotFoundError as exc:
        raise SmartShelfError(f"policy file {path} not found") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise SmartShelfError(f"policy file {path} is invalid: {str(exc).splitlines()[0]}") from exc
    return config


@dataclass(frozen=True)
class ConfigTables:
    shelf_policies: list[ShelfPolicy]
    wh_policies: list[WarehousePolicy]
    batch_catalog: list[BatchCatalogEntry]
    shelf_profiles: list[ShelfProfile]


def shelf_policy_of(shelf_id: str, category: str, policy: PolicyConfig, store_id: str = FIRST_STORE) -> ShelfPolicy:
    """A shelf's policy: its category's defaults."""
    defaults, _ = policy.for_category(category)
    return ShelfPolicy(store_id=store_id, shelf_id=shelf_id, **defaults.model_dump())


def wh_policy_of(shelf_id: str, category: str, capacity: int, policy: PolicyConfig,
                 store_id: str = FIRST_STORE) -> WarehousePolicy:
    """An item's warehouse policy: its category's defaults, the levels scaled to the warehouse's capacity for it
    (0 if the warehouse has no row for the item)."""
    _, defaults = policy.for_category(category)
    return WarehousePolicy(
        store_id=store_id, shelf_id=shelf_id,
        reorder_point=math.floor(capacity * defaults.reorder_point_pct),
        order_up_to=max(1, math.floor(capacity * defaults.order_up_to_pct)),
        lead_time_days=defaults.lead_time_days,
        delivery_hour=defaults.delivery_hour,
    )


def warehouse_capacity(store: StoreData) -> dict[str, int]:
    """shelf_id -> the warehouse's maximum stock of the item."""
    return {row.shelf_id: row.maximum_stock for row in store.warehouse_inventory}


def derive_config(store: StoreData, policy: PolicyConfig) -> ConfigTables:
    """The store's config tables, its rows stamped with its store."""
    capacity, store_id = warehouse_capacity(store), store.store_id
    shelf_policies, wh_policies, profiles = [], [], []
    for shelf in store.store_inventory:
        shelf_policies.append(shelf_policy_of(shelf.shelf_id, shelf.item_category, policy, store_id))
        wh_policies.append(wh_policy_of(shelf.shelf_id, shelf.item_category, capacity.get(shelf.shelf_id, 0), policy,
                                        store_id))
        profiles.append(ShelfProfile(
            store_id=store_id, shelf_id=shelf.shelf_id, aisle=shelf.aisle, item_category=shelf.item_category,
            item_subcategory=shelf.item_subcategory, item_weight=shelf.item_weight,
            shelf_weight=shelf.shelf_weight, maximum_stock=shelf.maximum_stock, item_price=shelf.item_price,
        ))
    lots = {(lot.shelf_id, lot.batch_code): lot for lot in [*store.store_batches, *store.warehouse_batches]}
    catalog = [
        BatchCatalogEntry(
            store_id=store_id, shelf_id=lot.shelf_id, batch_code=lot.batch_code, item_category=lot.item_category,
            item_subcategory=lot.item_subcategory, standard_batch_size=lot.standard_batch_size,
            received_date=lot.received_date, expiry_date=lot.expiry_date,
        )
        for _, lot in sorted(lots.items())
    ]
    return ConfigTables(shelf_policies, wh_policies, catalog, profiles)
