"""The promotion schema the migrations build is exactly the one the models describe (so a model
change without its numbered migration fails here), on the session's migrated database."""

from loyalty_promotion.models import Base
from loyalty_promotion.repository import SCHEMA
from loyalty_runtime.testing import model_differences


async def test_the_migrated_schema_matches_the_models(promotion_settings):
    assert await model_differences(promotion_settings.database_url, SCHEMA, Base.metadata) == []
