"""Test-wide settings. Lab fixtures live in tests/lab/conftest.py."""
import pathlib
import shutil
import tempfile

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionstart(session):
    # pytest-salt-factories' log server binds 0.0.0.0 by default; keep it on loopback.
    log_server = session.config.pluginmanager.get_plugin("saltfactories-log-server")
    if log_server is not None:
        log_server.log_host = "127.0.0.1"
    yield


@pytest.fixture(scope="session")
def salt_factories_default_root_dir():
    """The factories' daemons live under one short temporary directory (unix socket paths
    stay well below 108 characters) that is removed at the end of the session."""
    root = tempfile.mkdtemp(prefix="mf-factories-")
    try:
        yield pathlib.Path(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def salt_factories_config():
    return {"log_server_host": "127.0.0.1"}


@pytest.fixture(scope="session")
def event_listener():
    """salt-factories' event listener, bound to loopback instead of 0.0.0.0."""
    from saltfactories.plugins.event_listener import EventListener

    listener = EventListener()
    listener.host = "127.0.0.1"
    listener.address = f"tcp://127.0.0.1:{listener.port}"
    with listener:
        yield listener
