"""Shared test data for the virtual-user functional tests."""


# Hashes in the three schemes Dovecot verifies (syntax is what the sync checks).
SHA512 = "{SHA512-CRYPT}$6$saltsaltsalt$PMWE8DTlam1JU37Piyk43bHcMxTJq6sgu5DKB0/tGPjanN35jcY68QkpDfPFUGPWX5uCxIQkSPzMmqEiVNgts."
BLF = "{BLF-CRYPT}$2b$05$Si6T6/IPzREn46XzfQWE2uEAT4mxEcQrMYFBsNONWumHm52iB2mkK"
ARGON = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c29tZXNhbHRzb21lc2FsdA$n0Q3vQk1M1nqQnd5hGkzMJv9m7yXvKZxZ8RdV0X6pXk"


def sample_pillar(db):
    """The pillar contract of the brief, for database ``db``."""
    return {
        "db": db.pillar_db,
        "postmaster": "hostmaster@example-a.test",
        "exclusive": False,
        "domains": {
            "example-a.test": {
                "hosts": ["mail01.lab.test"],
                "description": "Example A",
                "quota": "10G",
                "maxquota": "20G",
                "mailboxes": {
                    "alice": {"name": "Alice Example", "password": ARGON, "quota": "1G"},
                    "bob": {"name": "Bob", "password": SHA512},
                    "hostmaster": {"name": "Hostmaster", "password": BLF},
                },
                "aliases": {
                    "info": ["alice@example-a.test", "bob@example-a.test"],
                    "@": ["alice@example-a.test"],
                },
                "alias_domains": ["alias-a.test"],
            },
            "bücher.test": {
                "hosts": ["mail01.lab.test"],
                "description": "Bücher",
                "mailboxes": {"carol": {"name": "Carol Ünïcødé 🙂", "password": SHA512}},
                "aliases": {"sales": ["carol@bücher.test", "partner@external.test"]},
            },
        },
    }
