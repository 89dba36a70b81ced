from alembic import context
from sqlalchemy import MetaData

from loyalty_notification.repository import SCHEMA
from loyalty_runtime.migrations import run_alembic_env

# The service speaks SQL text (repository.py) and its migrations are written by hand, so Alembic
# gets no model to compare against.
run_alembic_env(context, MetaData(schema=SCHEMA))
