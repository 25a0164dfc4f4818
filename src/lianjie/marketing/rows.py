"""Small helpers every marketing module uses: read one row by id, check a name."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, Table, select

from lianjie.errors import DomainError, ErrorCode

NAME_LENGTH_MAX = 200


def row_by_id(conn: Connection, table: Table, row_id: object, *, for_update: bool = False
              ) -> Row[Any] | None:
    """The row with this id (locked ``FOR UPDATE`` on PostgreSQL when asked); None for an id
    that is not a string, as a path or body can send."""
    if not isinstance(row_id, str):
        return None
    query = select(table).where(table.c.id == row_id)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).first()


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_LENGTH_MAX:
        raise DomainError(ErrorCode.INVALID_REQUEST,
                          f"name must be 1 to {NAME_LENGTH_MAX} characters", "name")
    return name
