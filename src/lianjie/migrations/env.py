"""Alembic environment: migrations run on the connection that ``lianjie.db.migrate`` passes in,
or on ``LIANJIE_DATABASE_URL`` when Alembic is run by hand."""

from __future__ import annotations

from alembic import context

import lianjie.schema  # noqa: F401 - registers every context's tables on the metadata
from lianjie.db import make_engine, metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine()
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata,
                          render_as_batch=conn.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()


run()
