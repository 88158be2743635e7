"""The one SQL escaper (_utils/mailfleet_sql.py) against a real MariaDB: whatever text goes
in comes back unchanged from the server, and nothing in it ends the literal early."""
import pytest

import mailfleet_sql

HOSTILE = [
    "plain",
    "O'Brien",
    "back\\slash",
    "\\'",                                  # an escaped quote that must stay text
    "x' OR '1'='1",
    "'; DROP TABLE mailbox; -- ",
    "trailing backslash \\",
    "ünïcødé ✉",
    "line\nbreak\tand tab",
    "%_ wildcards are literal",
    '"double" `backtick`',
]


@pytest.mark.parametrize("text", HOSTILE)
def test_what_goes_in_comes_back_from_mariadb(mariadb, text):
    conn = mariadb.root()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT {mailfleet_sql.literal(text)} AS v, 1 AS marker")
            rows = cur.fetchall()
    finally:
        conn.close()
    assert rows == ((text, 1),)
