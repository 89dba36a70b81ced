"""The models describe exactly what the migrations create."""

from loyalty_runtime.testing import model_differences
from loyalty_segmentation.models import Base
from loyalty_segmentation.service import DEFINITION


async def test_the_models_describe_exactly_what_the_migrations_create(segmentation_settings):
    assert await model_differences(segmentation_settings.database_url, DEFINITION.schema, Base.metadata) == []
