"""Alembic's entry point for tether's migrations: they run on the connection, and inside
the transaction, that ``memory/schema.py`` hands over (no ``alembic.ini`` is involved)."""

from alembic import context

from tether.memory.schema import VERSION_TABLE

context.configure(connection=context.config.attributes["connection"], version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
