"""
The one SQL string-literal escaper of mailfleet, for the statements that cannot take
parameters (``CREATE USER ... IDENTIFIED BY``, ``GRANT``, the ``mysql`` client's input) in
the database and webmail modules. MariaDB's escaping of backslash and quote, under its
default ``sql_mode`` (no ``NO_BACKSLASH_ESCAPES``). Pure; imported plainly.
"""
__virtualname__ = "mailfleet_sql"


def __virtual__():
    return __virtualname__


def literal(value):
    """``value`` as a quoted SQL string literal: ``O'Brien`` -> ``'O\\'Brien'``."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
