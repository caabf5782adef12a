import pytest

from tests.system.collector_process import Collectors


@pytest.fixture
def collectors():
    """
    Starts collector processes (``collectors.start(directory, environ, args=...)``
    or ``.spawn``) and kills, at the end of the test, whatever is left of them
    and of their workers, whether the test passed, failed or never saw them listen.
    """
    started = Collectors()
    yield started
    started.stop_all()
