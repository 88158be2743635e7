"""The lab's releases (issue 16): which Debian release each host boots, and images per
release kept side by side."""
import pytest

from mflab import config, image


def test_the_default_lab_is_mixed_mail02_on_debian_13(monkeypatch):
    monkeypatch.delenv("MAILFLEET_LAB_RELEASES", raising=False)
    monkeypatch.delenv("MAILFLEET_LAB_MAIL_HOSTS", raising=False)
    releases = {h.name: h.release for h in config.hosts()}
    assert releases == {"dns": "bookworm", "acme": "bookworm", "mail01": "bookworm", "mail02": "trixie",
                        "outside": "bookworm", "attacker": "bookworm"}


def test_each_mail_host_release_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MAILFLEET_LAB_RELEASES", "mail01:trixie, mail02:bookworm,mail03:trixie")
    monkeypatch.setenv("MAILFLEET_LAB_MAIL_HOSTS", "3")
    assert {h.name: h.release for h in config.hosts() if h.role == "mail"} == {
        "mail01": "trixie", "mail02": "bookworm", "mail03": "trixie"}


@pytest.mark.parametrize("raw,says", [
    ("mail02=trixie", "is not HOST:RELEASE"),
    ("mail02:sid", "unknown release 'sid'"),
    ("dns:trixie", "is not HOST:RELEASE"),
])
def test_a_bad_release_setting_is_refused_naming_the_variable(raw, says):
    with pytest.raises(SystemExit, match=says) as err:
        config.mail_releases(raw)
    assert "MAILFLEET_LAB_RELEASES" in str(err.value)


def test_only_the_mail_hosts_mask_their_release_php_fpm_unit():
    assert "php8.2-fpm.service" in config.mail_only_units("bookworm")
    assert "php8.4-fpm.service" in config.mail_only_units("trixie")


def test_each_release_has_its_own_image_key_and_name():
    keys = {s: image.recipe_key(s) for s in config.RELEASES}
    assert len(set(keys.values())) == len(keys)
    assert image.image_path("trixie").name == f"trixie-{keys['trixie']}"
    with pytest.raises(SystemExit, match="unknown Debian release"):
        image.recipe_key("sid")


def test_building_one_release_never_removes_the_other_releases_image(tmp_path):
    for name in ("bookworm-old", "bookworm-new", "trixie-aaa", "trixie-bbb", "0123456789abcdef"):
        (tmp_path / name).mkdir()
    gone = image.evict_old(tmp_path, "trixie", tmp_path / "trixie-bbb", in_use={str(tmp_path / "trixie-aaa")})
    assert gone == ["0123456789abcdef"]        # the image named before releases were
    gone = image.evict_old(tmp_path, "bookworm", tmp_path / "bookworm-new", in_use=set())
    assert gone == ["bookworm-old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bookworm-new", "trixie-aaa", "trixie-bbb"]
