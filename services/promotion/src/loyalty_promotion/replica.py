"""What one replica holds in memory, shared by its servicer and its background flush: the tenants'
compiled catalogs and the statistics not yet flushed."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from loyalty_promotion.cache import CatalogCache
from loyalty_promotion.statistics import StatisticsBuffer


@dataclass
class Replica:
    catalogs: CatalogCache
    statistics: StatisticsBuffer
    clock: Callable[[], datetime]
