"""Runners find our pure execution modules in both layouts a master may have
(_utils/mailfleet_pure.py): the repository through module_dirs, and extension modules synced
by `salt-run saltutil.sync_all` (runners/ and modules/ side by side)."""
import pytest

import mailfleet_pure


def _tree(root, runner_dir, module_dir, value):
    (root / runner_dir).mkdir(parents=True)
    (root / module_dir).mkdir(parents=True)
    runner = root / runner_dir / "mailfleet_x.py"
    runner.write_text("")
    (root / module_dir / f"mf_pure_{value}.py").write_text(f"VALUE = {value!r}\n")
    return runner


@pytest.mark.parametrize("runner_dir,module_dir", [("_runners", "_modules"),   # the repository
                                                   ("runners", "modules")])    # synced extension_modules
def test_a_runner_finds_the_module_beside_it(tmp_path, runner_dir, module_dir):
    value = f"{runner_dir}-{tmp_path.name}"[:40].replace("-", "_")
    runner = _tree(tmp_path, runner_dir, module_dir, value)
    mod = mailfleet_pure.load(f"mf_pure_{value}", str(runner))
    assert mod.VALUE == value
    assert mailfleet_pure.load(f"mf_pure_{value}", str(runner)) is mod   # loaded once


def test_the_state_tree_link_resolves_to_the_repository(tmp_path):
    runner = _tree(tmp_path / "repo", "_runners", "_modules", "linked")
    (tmp_path / "repo" / "salt").mkdir()
    (tmp_path / "repo" / "salt" / "_runners").symlink_to("../_runners")
    mod = mailfleet_pure.load("mf_pure_linked", str(tmp_path / "repo" / "salt" / "_runners" / runner.name))
    assert mod.VALUE == "linked"


def test_a_missing_module_names_where_it_was_looked_for(tmp_path):
    (tmp_path / "runners").mkdir()
    with pytest.raises(ImportError) as err:
        mailfleet_pure.load("mf_pure_absent", str(tmp_path / "runners" / "mailfleet_x.py"))
    assert str(tmp_path / "_modules" / "mf_pure_absent.py") in str(err.value)
    assert str(tmp_path / "modules" / "mf_pure_absent.py") in str(err.value)
    assert "saltutil.sync_all" in str(err.value)
