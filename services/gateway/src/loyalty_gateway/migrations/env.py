from alembic import context

from loyalty_gateway.models import Base
from loyalty_runtime.migrations import run_alembic_env

run_alembic_env(context, Base.metadata)
