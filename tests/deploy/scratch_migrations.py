"""A migrations folder shaped like a service's (env.py, the template, numbered revisions) in a
temporary directory, for tests of `migrate` and of the revision writer without a real service."""

from pathlib import Path

from tests.deploy.chart import ROOT

ENV = """\
from alembic import context
from sqlalchemy import BigInteger, Column, Identity, MetaData, String, Table

from loyalty_runtime.migrations import run_alembic_env

metadata = MetaData(schema=context.config.attributes["schema"])
{tables}
run_alembic_env(context, metadata)
"""

REVISION = '''\
"""{message}"""

from alembic import op

revision = "{revision}"
down_revision = {down_revision!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{statements}


def downgrade() -> None:
    pass
'''


def service_templates() -> list[Path]:
    """The script.py.mako of every service with migrations: what `migration SERVICE` writes from."""
    templates = sorted(ROOT.glob("services/*/src/*/migrations/script.py.mako"))
    assert templates, "no service has migrations"
    return templates


def write_migrations(directory: Path, tables: str, revisions: list[tuple[str, list[str]]]) -> str:
    """`tables`: Table(...) lines of the models' metadata; `revisions`: (message, SQL statements),
    numbered 0001, 0002, ... Returns the script location (the folder's path)."""
    versions = directory / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (directory / "env.py").write_text(ENV.format(tables=tables))
    if not (directory / "script.py.mako").exists():
        (directory / "script.py.mako").write_text(service_templates()[0].read_text())
    for number, (message, statements) in enumerate(revisions, start=1):
        body = "\n".join(f"    op.execute({statement!r})" for statement in statements) or "    pass"
        revision = f"{number:04d}"
        down = f"{number - 1:04d}" if number > 1 else None
        (versions / f"{revision}_{message.replace(' ', '_')}.py").write_text(
            REVISION.format(message=message, revision=revision, down_revision=down, statements=body)
        )
    return str(directory)
