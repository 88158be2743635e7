"""
The merged formula settings per platform (mail._mapdata, salt/mail/map.jinja's layers:
defaults < os_family < osfinger < pillar), compared with the dumps committed in
tests/unit/mapdata/: a change of a default or of a platform's value shows in review as a
change of these files. After an intended change, rewrite them with
``MAILFLEET_WRITE_MAPDATA=1 .venv/bin/python -m pytest tests/unit/test_mapdata.py`` and
commit the diff.
"""
import os
from pathlib import Path

import pytest
import yaml

from salt_render import DEBIAN13_GRAINS, DEBIAN_GRAINS, FREEBSD_GRAINS, SaltRender

DUMPS = Path(__file__).parent / "mapdata"
PILLAR = {"mailfleet": {"tls": {"contact": "postmaster@lab.test"},
                        "db": {"postfix_password": "pf-secret", "dovecot_password": "dc-secret",
                               "sync_password": "sy-secret"}}}
PLATFORMS = {"Debian-12": DEBIAN_GRAINS, "Debian-13": DEBIAN13_GRAINS, "FreeBSD-14": FREEBSD_GRAINS}


def _dump(tmp, grains, pillar=PILLAR):
    # only this pillar: the dumps show the formula's defaults, not the lab's pillar files
    (tmp / "no-pillar").mkdir()
    r = SaltRender(tmp, grains, pillar=pillar, pillar_roots=[tmp / "no-pillar"])
    high = r.show_sls("mail._mapdata")
    (state,) = [c for c in r.chunks(high) if c[0] == "mailfleet-mapdata-dump"]
    return state[3]


@pytest.mark.parametrize("finger", sorted(PLATFORMS))
def test_the_merged_settings_are_the_committed_ones(tmp_path, finger):
    state = _dump(tmp_path, PLATFORMS[finger])
    assert state["mode"] == "0600" and state["name"].endswith("/mailfleet/mapdata.yaml")
    text = state["contents"]
    path = DUMPS / f"{finger}.yaml"
    if os.environ.get("MAILFLEET_WRITE_MAPDATA"):
        path.write_text(text)
    assert text == path.read_text(), f"{finger}: the merged settings changed; see this file's docstring"


def test_secrets_are_masked_in_the_dump(tmp_path):
    text = _dump(tmp_path, DEBIAN_GRAINS)["contents"]
    assert not [s for s in ("pf-secret", "dc-secret", "sy-secret") if s in text]
    assert yaml.safe_load(text)["db"]["sync_password"] == "<secret>"


def test_each_release_gets_its_dovecot_and_php(tmp_path):
    got = {f: yaml.safe_load((DUMPS / f"{f}.yaml").read_text())["lookup"] for f in PLATFORMS}
    assert [got[f]["dovecot_major"] for f in sorted(got)] == ["2.3", "2.4", "2.3"]
    assert got["Debian-12"]["php_fpm_service"] == "php8.2-fpm"
    assert got["Debian-13"]["php_fpm_service"] == "php8.4-fpm"


def test_pillar_lookup_wins_over_every_layer(tmp_path):
    pillar = {"mailfleet": dict(PILLAR["mailfleet"], lookup={"dovecot_major": "2.4", "mysql_socket": "/srv/my.sock"})}
    lookup = yaml.safe_load(_dump(tmp_path, DEBIAN_GRAINS, pillar)["contents"])["lookup"]
    assert (lookup["dovecot_major"], lookup["mysql_socket"]) == ("2.4", "/srv/my.sock")


def test_a_release_without_parameters_is_refused_naming_the_key(tmp_path):
    grains = dict(DEBIAN_GRAINS, osrelease="11", osmajorrelease=11, osfinger="Debian-11")
    (tmp_path / "no-pillar").mkdir()
    r = SaltRender(tmp_path, grains, pillar=PILLAR, pillar_roots=[tmp_path / "no-pillar"])
    high = r.show_sls("mail.validate")
    ret = r.run_state(high, "mailfleet-settings-valid")
    assert ret["result"] is False
    assert any(line.startswith("mailfleet:lookup:dovecot_major:") for line in ret["comment"].splitlines())
