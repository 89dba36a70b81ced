from alembic import context

from loyalty_runtime.migrations import run_alembic_env
from loyalty_segmentation.models import Base

run_alembic_env(context, Base.metadata)
